#pragma once
// OpenSSL's error queue as one line, for the bench's two OpenSSL users (smtpload's TLS
// client and starttls-floor's OpenSSL responder). Emptying the queue also keeps an old
// error from being reported with the next failure.
#include <openssl/err.h>

#include <string>

namespace bench {

inline std::string openssl_errors() {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out.empty() ? std::string("no OpenSSL error queued") : out;
}

}  // namespace bench
