#pragma once
// limits.max_connections and limits.per_client_connections, counted across all loop
// threads (a client's connections may land on any of them with SO_REUSEPORT).
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "core/address.h"

namespace smtpscreen {

class ConnectionLimits {
public:
    enum class Admit { Ok, TooManyTotal, TooManyFromClient };

    Admit admit(const Endpoint& client, int max_total, int max_per_client);
    void release(const Endpoint& client);
    int total() const;

private:
    // The client's address bytes (4 or 16), not its text: every held client has an
    // entry, and a string key would be 32 bytes more in each (docs/design.md, "Memory
    // per connection").
    struct AddressKey {
        explicit AddressKey(const Endpoint& client);
        std::array<unsigned char, 16> bytes{};
        uint8_t size = 0;
        bool operator==(const AddressKey& other) const { return size == other.size && bytes == other.bytes; }
    };
    struct AddressHash {
        size_t operator()(const AddressKey& key) const {
            return std::hash<std::string_view>{}(
                std::string_view(reinterpret_cast<const char*>(key.bytes.data()), key.size));
        }
    };

    mutable std::mutex mutex_;
    std::unordered_map<AddressKey, int, AddressHash> per_client_;
    int total_ = 0;
};

}  // namespace smtpscreen
