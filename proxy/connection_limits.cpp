#include "proxy/connection_limits.h"

#include <algorithm>

namespace smtpscreen {

ConnectionLimits::Admit ConnectionLimits::admit(const Endpoint& client, int max_total, int max_per_client) {
    std::lock_guard lock(mutex_);
    if (total_ >= max_total) return Admit::TooManyTotal;
    if (!per_client_.add(client.raw(), static_cast<uint32_t>(std::max(max_per_client, 0)))) {
        return Admit::TooManyFromClient;
    }
    ++total_;
    return Admit::Ok;
}

void ConnectionLimits::release(const Endpoint& client) {
    std::lock_guard lock(mutex_);
    if (per_client_.remove(client.raw())) --total_;
}

int ConnectionLimits::total() const {
    std::lock_guard lock(mutex_);
    return total_;
}

}  // namespace smtpscreen
