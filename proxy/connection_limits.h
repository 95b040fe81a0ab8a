#pragma once
// limits.max_connections and limits.per_client_connections, counted across all loop
// threads (a client's connections may land on any of them with SO_REUSEPORT).
#include <mutex>

#include "core/address.h"
#include "proxy/client_counts.h"

namespace smtpscreen {

class ConnectionLimits {
public:
    enum class Admit { Ok, TooManyTotal, TooManyFromClient };

    Admit admit(const Endpoint& client, int max_total, int max_per_client);
    void release(const Endpoint& client);
    int total() const;

private:
    mutable std::mutex mutex_;
    ClientCounts per_client_;  // by the address's bytes, not its text
    int total_ = 0;
};

}  // namespace smtpscreen
