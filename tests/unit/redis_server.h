#pragma once
// A real redis-server for the Redis cache's tests: on a unix socket in its own scratch
// directory, with no persistence, started and stopped by its PID (never by name). A
// machine without redis-server fails these tests rather than skipping them
// (scripts/install-deps installs it).
#include <sys/types.h>

#include <string>
#include <vector>

#include "cache/redis_settings.h"
#include "fixtures.h"

namespace smtpscreen::test {

class RedisServer {
public:
    // extra: more redis-server arguments, e.g. {"--requirepass", "secret"}.
    explicit RedisServer(std::vector<std::string> extra = {});
    ~RedisServer();
    RedisServer(const RedisServer&) = delete;
    RedisServer& operator=(const RedisServer&) = delete;

    const std::string& socket() const { return socket_; }
    // Starts it (again, on the same socket) and waits until it answers PING.
    void start();
    // SIGKILL: gone at once, as in a crash; its socket file stays behind.
    void kill();
    // SIGSTOP / SIGCONT: connections stay up and nothing is answered meanwhile.
    void freeze();
    void thaw();
    // redis-cli -s SOCKET ARGS... (with the password, if one was set), its standard output.
    std::string cli(const std::vector<std::string>& args) const;

private:
    void stop();

    TempDir dir_{"smtpscreen-redis"};
    std::string socket_;
    std::vector<std::string> extra_;
    std::string password_;
    pid_t pid_ = -1;
};

// Settings for a cache on `server`, with short reconnect delays so that the tests of an
// outage do not wait for the production backoff.
RedisSettings settings_for(const RedisServer& server, Millis timeout = Millis(2000));

}  // namespace smtpscreen::test
