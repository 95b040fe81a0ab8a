#pragma once
// systemd's LoadCredential= hands a service copies of files it could not read itself
// (a root-only TLS key) in the directory named by $CREDENTIALS_DIRECTORY.
#include <string>
#include <string_view>

namespace smtpscreen {

// A bare file name (no '/') is the name of a credential when $CREDENTIALS_DIRECTORY is
// set: "tls.key" becomes "$CREDENTIALS_DIRECTORY/tls.key". Anything else is returned as
// it is, so paths keep meaning what they mean outside systemd.
std::string credential_path(std::string_view value);

}  // namespace smtpscreen
