#include "proxy/connection_limits.h"

namespace smtpscreen {

ConnectionLimits::Admit ConnectionLimits::admit(const std::string& client_ip, int max_total, int max_per_client) {
    std::lock_guard lock(mutex_);
    if (total_ >= max_total) return Admit::TooManyTotal;
    int& mine = per_client_[client_ip];
    if (mine >= max_per_client) {
        if (mine == 0) per_client_.erase(client_ip);
        return Admit::TooManyFromClient;
    }
    ++mine;
    ++total_;
    return Admit::Ok;
}

void ConnectionLimits::release(const std::string& client_ip) {
    std::lock_guard lock(mutex_);
    auto it = per_client_.find(client_ip);
    if (it == per_client_.end()) return;
    --total_;
    if (--it->second == 0) per_client_.erase(it);
}

int ConnectionLimits::total() const {
    std::lock_guard lock(mutex_);
    return total_;
}

}  // namespace smtpscreen
