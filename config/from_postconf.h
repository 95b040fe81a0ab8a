#pragma once
// smtpscreen --from-postconf: postscreen's settings, as `postconf -n` prints them, as
// smtpscreen's INI, so that an admin moving over does not retype them.
//
// Each postscreen_* parameter with an equivalent becomes its key, with a comment line
// naming where the value came from; every value is checked by the key's own loader
// (and a file it names is read), so the INI loads as written. A key is written when
// main.cf sets its postscreen parameter, or when postscreen's default differs from
// smtpscreen's (the actions: postscreen ships "ignore"), so that the INI does what
// postscreen did. Each postscreen_* parameter that cannot be mapped, and each value
// that does not fit, becomes a '#' comment that names it and says why. listen.address
// and backend.address are master.cf's business (postscreen's listener and the smtpd it
// passes clients to) and are left for the admin, with a comment saying so.
#include <string>
#include <string_view>

namespace smtpscreen {

std::string ini_from_postconf(std::string_view postconf_n);

}  // namespace smtpscreen
