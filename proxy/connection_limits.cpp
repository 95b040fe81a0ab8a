#include "proxy/connection_limits.h"

#include <algorithm>

namespace smtpscreen {

ConnectionLimits::AddressKey::AddressKey(const Endpoint& client) {
    const std::string_view raw = client.raw();
    size = static_cast<uint8_t>(std::min(raw.size(), bytes.size()));
    std::copy_n(raw.begin(), size, bytes.begin());
}

ConnectionLimits::Admit ConnectionLimits::admit(const Endpoint& client, int max_total, int max_per_client) {
    const AddressKey key(client);
    std::lock_guard lock(mutex_);
    if (total_ >= max_total) return Admit::TooManyTotal;
    int& mine = per_client_[key];
    if (mine >= max_per_client) {
        if (mine == 0) per_client_.erase(key);
        return Admit::TooManyFromClient;
    }
    ++mine;
    ++total_;
    return Admit::Ok;
}

void ConnectionLimits::release(const Endpoint& client) {
    const AddressKey key(client);
    std::lock_guard lock(mutex_);
    auto it = per_client_.find(key);
    if (it == per_client_.end()) return;
    --total_;
    if (--it->second == 0) per_client_.erase(it);
}

int ConnectionLimits::total() const {
    std::lock_guard lock(mutex_);
    return total_;
}

}  // namespace smtpscreen
