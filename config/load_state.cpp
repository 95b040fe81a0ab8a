#include "config/load_state.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>

#include "core/text.h"

namespace smtpscreen {

namespace {

constexpr std::string_view kSpace = " \t\r";

}  // namespace


std::string_view trim(std::string_view s) {
    return trim(s, kSpace);
}

std::string quote(std::string_view v) {
    return fmt::format("\"{}\"", v);
}

// Comma-separated list, items trimmed; empty items (a trailing comma left over from
// wrapping a long list) are skipped rather than refused.
std::vector<std::string_view> split_list(std::string_view s) {
    std::vector<std::string_view> items;
    while (true) {
        size_t comma = s.find(',');
        auto item = trim(s.substr(0, comma));
        if (!item.empty()) items.push_back(item);
        if (comma == std::string_view::npos) break;
        s.remove_prefix(comma + 1);
    }
    return items;
}

// Reads a whole regular file. Refusing directories and devices here gives a clear
// message instead of an empty rule set or a read that never ends.
std::optional<std::string> read_text_file(const std::string& path, std::string* why) {
    // O_NONBLOCK: opening a FIFO must not hang the start; fstat below refuses it.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *why = std::strerror(errno);
        return std::nullopt;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = S_ISDIR(st.st_mode) ? "it is a directory" : "it is not a regular file";
        ::close(fd);
        return std::nullopt;
    }
    std::string text;
    char buf[65536];
    while (true) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            *why = std::strerror(errno);
            ::close(fd);
            return std::nullopt;
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return text;
}

void LoadState::add(int line, std::string_view key, std::string_view what) {
    if (line > 0) {
        problems.push_back({line, fmt::format("{}:{}: {}: {}", path, line, key, what)});
    } else {
        problems.push_back({0, fmt::format("{}: {}: {}", path, key, what)});
    }
}

int LoadState::line_of(const std::string& key) const {
    auto it = values.find(key);
    return it == values.end() ? 0 : it->second.line;
}

std::optional<bool> KeyContext::boolean(std::string_view v) {
    auto l = ascii_lower(v);
    if (l == "on" || l == "yes" || l == "true") return true;
    if (l == "off" || l == "no" || l == "false") return false;
    fail(quote(v) + " is not a yes/no value (use on, off, yes, no, true or false)");
    return std::nullopt;
}

std::optional<Millis> KeyContext::duration(std::string_view v, Zero zero) {
    auto d = parse_duration(v);
    if (!d) {
        fail(quote(v) + " is not a duration (use 6s, 2m, 1h)");
        return std::nullopt;
    }
    if (zero == Zero::Refused && d->count() == 0) {
        fail(quote(v) + " is zero, which would expire at once (use a positive duration such as 5s)");
        return std::nullopt;
    }
    if (*d > kMaxDuration) {
        fail(quote(v) + " is too long (use at most 3650d)");
        return std::nullopt;
    }
    return d;
}

std::optional<int> KeyContext::integer(std::string_view v, long long lo, long long hi) {
    long long n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    std::string range = lo == INT_MIN && hi == INT_MAX ? std::string("a whole number such as -1")
                        : hi == INT_MAX ? fmt::format("a whole number of at least {}", lo)
                        : lo == INT_MIN ? fmt::format("a whole number of at most {}", hi)
                                        : fmt::format("a whole number from {} to {}", lo, hi);
    if (v.empty() || ec == std::errc::invalid_argument || end != v.data() + v.size()) {
        fail(quote(v) + " is not a whole number (use " + range + ")");
        return std::nullopt;
    }
    if (ec == std::errc::result_out_of_range || n < lo || n > hi) {
        fail(quote(v) + " is out of range (use " + range + ")");
        return std::nullopt;
    }
    return static_cast<int>(n);
}

// Port 0 is refused: it means "any port" to bind(2) and "nothing" to connect(2).
std::optional<Endpoint> KeyContext::endpoint(std::string_view v, std::optional<uint16_t> default_port) {
    auto e = Endpoint::parse(v, default_port);
    if (!e) {
        if (default_port) {
            fail(fmt::format("{} is not an address (use ip or ip:port, e.g. 192.0.2.1, 192.0.2.1:{} or [2001:db8::1]:{})",
                             quote(v), *default_port, *default_port));
        } else {
            fail(quote(v) + " is not an ip:port (use e.g. 127.0.0.1:2525 or [::1]:2525)");
        }
        return std::nullopt;
    }
    if (e->port() == 0) {
        fail(quote(v) + " has port 0 (use a port from 1 to 65535)");
        return std::nullopt;
    }
    return e;
}

std::optional<std::vector<Endpoint>> KeyContext::endpoints(std::string_view v, std::optional<uint16_t> default_port) {
    std::vector<Endpoint> out;
    bool ok = true;
    for (auto item : split_list(v)) {
        auto e = endpoint(item, default_port);
        if (!e) {
            ok = false;
        } else if (std::find(out.begin(), out.end(), *e) != out.end()) {
            fail(quote(item) + " is listed twice (keep one)");
            ok = false;
        } else {
            out.push_back(*e);
        }
    }
    if (!ok) return std::nullopt;
    return out;
}

std::optional<std::vector<Cidr>> KeyContext::cidrs(std::string_view v) {
    std::vector<Cidr> out;
    bool ok = true;
    for (auto item : split_list(v)) {
        std::string why;
        auto c = Cidr::parse(item, &why);
        if (!c) {
            fail(why);
            ok = false;
        } else {
            out.push_back(*c);
        }
    }
    if (!ok) return std::nullopt;
    return out;
}

// Relative paths are taken from the current directory, like every other path
// given to a daemon on its command line; the shipped INI says so.
std::optional<std::string> KeyContext::file(std::string_view v) {
    std::string why;
    auto text = read_text_file(std::string(v), &why);
    if (!text) fail(fmt::format("cannot read {}: {} (fix the path or the file's permissions)", quote(v), why));
    return text;
}

}  // namespace smtpscreen
