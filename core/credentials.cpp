#include "core/credentials.h"

#include <cstdlib>

namespace smtpscreen {

std::string credential_path(std::string_view value) {
    const char* dir = std::getenv("CREDENTIALS_DIRECTORY");
    if (value.empty() || value.find('/') != std::string_view::npos || dir == nullptr || *dir == '\0') {
        return std::string(value);
    }
    std::string path(dir);
    if (path.back() != '/') path += '/';
    path += value;
    return path;
}

}  // namespace smtpscreen
