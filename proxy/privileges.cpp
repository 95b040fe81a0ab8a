#include "proxy/privileges.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace smtpscreen {
namespace {

struct UserIds {
    uid_t uid;
    gid_t gid;
};

UserIds lookup_user(const std::string& user) {
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buf(16384);
    if (::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
        throw std::runtime_error(fmt::format("process.user: no such user \"{}\" (create it, or fix the name)", user));
    }
    return {pw.pw_uid, pw.pw_gid};
}

[[noreturn]] void cannot_become(const std::string& user, const char* step) {
    throw std::runtime_error(fmt::format("process.user: cannot become \"{}\": {} failed: {} (start as root, or leave "
                                         "process.user empty)",
                                         user, step, std::strerror(errno)));
}

// Empties the bounding set but for CAP_NET_BIND_SERVICE, so that nothing else can come
// back (through a setuid program run by a future bug, say), and the ambient set. Needs
// CAP_SETPCAP in the effective set: before setuid, which empties it.
void bound_to_bind_capability(const std::string& user) {
    // cap_max_bits(): what this kernel knows, which may be more than the headers did.
    for (cap_value_t cap = 0; cap < static_cast<cap_value_t>(cap_max_bits()); ++cap) {
        if (cap == CAP_NET_BIND_SERVICE) continue;
        if (cap_drop_bound(cap) != 0) cannot_become(user, "dropping a capability from the bounding set");
    }
    if (cap_reset_ambient() != 0 && errno != EINVAL) cannot_become(user, "clearing the ambient capabilities");
}

// After setuid: CAP_NET_BIND_SERVICE alone, permitted and effective, nothing inheritable.
void keep_only_bind_capability(const std::string& user) {
    cap_t caps = cap_init();
    if (caps == nullptr) cannot_become(user, "cap_init");
    const cap_value_t keep[] = {CAP_NET_BIND_SERVICE};
    int rc = cap_set_flag(caps, CAP_PERMITTED, 1, keep, CAP_SET);
    if (rc == 0) rc = cap_set_flag(caps, CAP_EFFECTIVE, 1, keep, CAP_SET);
    if (rc == 0) rc = cap_set_proc(caps);
    int err = errno;
    cap_free(caps);
    errno = err;
    if (rc != 0) cannot_become(user, "keeping CAP_NET_BIND_SERVICE");
}

}  // namespace

void drop_privileges(const std::string& user) {
    if (user.empty()) return;
    const UserIds ids = lookup_user(user);
    if (::geteuid() != 0) {
        if (::geteuid() == ids.uid) return;  // started as that user already (systemd's User=)
        errno = EPERM;
        cannot_become(user, "setuid");
    }
    // initgroups, not setgroups(0, NULL): a key that is 0640 root:ssl-cert must stay
    // readable for the SIGHUP that re-reads it.
    if (::initgroups(user.c_str(), ids.gid) != 0) cannot_become(user, "initgroups");
    if (::setgid(ids.gid) != 0) cannot_become(user, "setgid");
    bound_to_bind_capability(user);
    // Without PR_SET_KEEPCAPS, setuid from root to a user clears the permitted set too.
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) cannot_become(user, "prctl(PR_SET_KEEPCAPS)");
    if (::setuid(ids.uid) != 0) cannot_become(user, "setuid");
    ::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    keep_only_bind_capability(user);
}

std::vector<std::string> reloaded_files(const Config& config, const std::string& config_path) {
    std::vector<std::string> files{config_path};
    for (const std::string* f : {&config.access_file, &config.dnsbl_reply_map_file, &config.tls_ticket_key_file}) {
        if (!f->empty()) files.push_back(*f);
    }
    for (const auto* list : {&config.tls_cert, &config.tls_key}) files.insert(files.end(), list->begin(), list->end());
    if (config.backend_tls && !config.backend_tls_ca.empty()) files.push_back(config.backend_tls_ca);
    return files;
}

std::vector<std::string> files_unreadable_by(const std::string& user, const std::vector<std::string>& paths) {
    const UserIds ids = lookup_user(user);
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
        throw std::runtime_error(fmt::format("cannot test files as \"{}\": pipe: {}", user, std::strerror(errno)));
    }
    pid_t child = ::fork();
    if (child < 0) {
        int err = errno;
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
        throw std::runtime_error(fmt::format("cannot test files as \"{}\": fork: {}", user, std::strerror(err)));
    }
    if (child == 0) {
        // The child becomes the user and opens each file; one errno per file goes back.
        ::close(pipe_fds[0]);
        int become = 0;
        if (::initgroups(user.c_str(), ids.gid) != 0 || ::setgid(ids.gid) != 0 || ::setuid(ids.uid) != 0) become = errno;
        for (const auto& path : paths) {
            int err = become;
            if (err == 0) {
                int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
                if (fd < 0) err = errno;
                else ::close(fd);
            }
            if (::write(pipe_fds[1], &err, sizeof err) != static_cast<ssize_t>(sizeof err)) ::_exit(1);
        }
        ::_exit(0);
    }
    ::close(pipe_fds[1]);
    std::vector<std::string> unreadable;
    for (const auto& path : paths) {
        int err = 0;
        ssize_t n;
        do n = ::read(pipe_fds[0], &err, sizeof err);
        while (n < 0 && errno == EINTR);
        if (n != static_cast<ssize_t>(sizeof err)) {
            unreadable.push_back(fmt::format("{}: could not be tested as \"{}\"", path, user));
            continue;
        }
        if (err != 0) unreadable.push_back(fmt::format("{}: {}", path, std::strerror(err)));
    }
    ::close(pipe_fds[0]);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    return unreadable;
}

}  // namespace smtpscreen
