#pragma once
// limits.max_connections and limits.per_client_connections, counted across all loop
// threads (a client's connections may land on any of them with SO_REUSEPORT).
#include <mutex>
#include <string>
#include <unordered_map>

namespace smtpscreen {

class ConnectionLimits {
public:
    enum class Admit { Ok, TooManyTotal, TooManyFromClient };

    Admit admit(const std::string& client_ip, int max_total, int max_per_client);
    void release(const std::string& client_ip);
    int total() const;

private:
    mutable std::mutex mutex_;
    std::unordered_map<std::string, int> per_client_;
    int total_ = 0;
};

}  // namespace smtpscreen
