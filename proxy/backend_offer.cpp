#include "proxy/backend_offer.h"

#include <fmt/ranges.h>

#include "screen/ehlo_keywords.h"

namespace smtpscreen {

void BackendOffer::learn(std::string_view ehlo_reply, std::string_view from) {
    std::vector<std::string> keywords = ehlo_reply_keywords(ehlo_reply);
    auto offer = std::make_shared<const std::vector<std::string>>(offerable_keywords(keywords));
    auto tls_first = std::make_shared<const std::vector<std::string>>(tls_first_keywords(keywords));
    {
        std::lock_guard lock(mutex_);
        if (known_ && keywords == backend_) return;
        known_ = true;
        backend_ = keywords;
        offer_ = offer;
        tls_first_offer_ = tls_first;
    }
    log_.info("backend EHLO keywords (from {}): {}; the deep tests' EHLO now offers: {} (deep.ehlo_keywords = auto)",
              from, keywords.empty() ? "none" : fmt::format("{}", fmt::join(keywords, ", ")),
              offer->empty() ? "nothing" : fmt::format("{}", fmt::join(*offer, ", ")));
}

std::shared_ptr<const std::vector<std::string>> BackendOffer::offer() const {
    std::lock_guard lock(mutex_);
    return offer_;
}

std::shared_ptr<const std::vector<std::string>> BackendOffer::tls_first_offer() const {
    std::lock_guard lock(mutex_);
    return tls_first_offer_;
}

bool BackendOffer::known() const {
    std::lock_guard lock(mutex_);
    return known_;
}

}  // namespace smtpscreen
