#pragma once
// deep.ehlo_keywords = auto: what the deep-test dialog offers is what the backend
// offers (screen/ehlo_keywords.h says what is left out and why), learned from the
// backend's EHLO replies: the probe's at start and at every SIGHUP
// (proxy/backend_probe.h), and the reply to each deep-tested client's replayed EHLO.
// One per process, shared by every loop thread.
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/log.h"

namespace smtpscreen {

class BackendOffer {
public:
    explicit BackendOffer(Logger& log) : log_(log) {}
    BackendOffer(const BackendOffer&) = delete;
    BackendOffer& operator=(const BackendOffer&) = delete;

    // A 250 reply of the backend to an EHLO, whole. from: who asked, for the one log
    // line that tells a change ("the probe", "a replayed client").
    void learn(std::string_view ehlo_reply, std::string_view from);
    // What the dialog offers now. Empty until the backend has first answered: a client
    // is promised nothing the backend might refuse.
    std::shared_ptr<const std::vector<std::string>> offer() const;
    // What the dialog of TLS before the backend offers (tls_first_keywords): empty
    // until the backend has first answered, as offer().
    std::shared_ptr<const std::vector<std::string>> tls_first_offer() const;
    bool known() const;

private:
    Logger& log_;
    mutable std::mutex mutex_;
    bool known_ = false;                  // guarded by mutex_
    std::vector<std::string> backend_;    // guarded by mutex_: the keywords last learned
    std::shared_ptr<const std::vector<std::string>> offer_ =
        std::make_shared<const std::vector<std::string>>();  // guarded by mutex_
    std::shared_ptr<const std::vector<std::string>> tls_first_offer_ =
        std::make_shared<const std::vector<std::string>>();  // guarded by mutex_
};

}  // namespace smtpscreen
