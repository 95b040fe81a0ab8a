#include "redis_server.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

extern char** environ;

namespace smtpscreen::test {

namespace {

// Runs argv (found in PATH) with stdout to `out`; returns its exit status, -1 when it
// could not be started.
int run(const std::vector<std::string>& args, std::string* out) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) return -1;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    if (rc != 0) {
        ::close(pipe_fds[0]);
        return -1;
    }
    char buf[4096];
    for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) {
        if (out) out->append(buf, static_cast<size_t>(n));
    }
    ::close(pipe_fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

RedisServer::RedisServer(std::vector<std::string> extra) : socket_(dir_.path("r.sock")), extra_(std::move(extra)) {
    // hiredis writes with write(2): a server killed under a test must be a lost
    // connection, as it is in smtpscreen (which ignores SIGPIPE), not the end of the test run.
    ::signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i + 1 < extra_.size(); ++i) {
        if (extra_[i] == "--requirepass") password_ = extra_[i + 1];
    }
    start();
}

RedisServer::~RedisServer() { stop(); }

void RedisServer::start() {
    REQUIRE(pid_ == -1);
    std::vector<std::string> args{"redis-server",  "--port",       "0",        "--unixsocket", socket_,
                                  "--save",        "",             "--appendonly", "no",      "--dir",
                                  dir_.path(""),   "--logfile",    dir_.path("redis.log")};
    args.insert(args.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawnp(&pid_, "redis-server", nullptr, nullptr, argv.data(), environ);
    if (rc != 0) {
        pid_ = -1;
        FAIL("cannot start redis-server (" << std::strerror(rc)
                                            << "): install it (scripts/install-deps installs redis-server)");
    }
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < end) {
        std::string out;
        if (::access(socket_.c_str(), F_OK) == 0 && cli({"PING"}).find("PONG") != std::string::npos) return;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            FAIL("redis-server exited at start; see its log in " << dir_.path("redis.log"));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL("redis-server did not answer on " << socket_ << " within 10 s");
}

void RedisServer::stop() {
    if (pid_ == -1) return;
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

void RedisServer::kill() {
    REQUIRE(pid_ != -1);
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
}

void RedisServer::freeze() {
    REQUIRE(pid_ != -1);
    ::kill(pid_, SIGSTOP);
}

void RedisServer::thaw() {
    REQUIRE(pid_ != -1);
    ::kill(pid_, SIGCONT);
}

std::string RedisServer::cli(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{"redis-cli", "-s", socket_};
    if (!password_.empty()) argv.insert(argv.end(), {"--no-auth-warning", "-a", password_});
    argv.insert(argv.end(), args.begin(), args.end());
    std::string out;
    const int rc = run(argv, &out);
    REQUIRE_MESSAGE(rc != -1, "cannot run redis-cli (it comes with redis-server: scripts/install-deps installs it)");
    return out;
}

RedisSettings settings_for(const RedisServer& server, Millis timeout) {
    RedisSettings s;
    s.address = server.socket();
    s.timeout = timeout;
    s.first_retry = Millis(50);
    s.max_retry = Millis(400);
    return s;
}

}  // namespace smtpscreen::test
