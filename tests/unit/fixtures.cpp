#include "fixtures.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace smtpscreen::test {

namespace fs = std::filesystem;

UvLoop::UvLoop() { uv_loop_init(&loop); }

UvLoop::~UvLoop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
}

void UvLoop::run_for(std::chrono::milliseconds d) {
    const auto end = std::chrono::steady_clock::now() + d;
    run_until([&] { return std::chrono::steady_clock::now() >= end; }, d + std::chrono::milliseconds(100));
}

TempDir::TempDir(const std::string& prefix) {
    std::string tmpl = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir_ = tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& text) const {
    const auto p = path(name);
    std::ofstream(p) << text;
    fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read);
    return p;
}

StderrCapture::StderrCapture() {
    std::fflush(stderr);
    file_ = std::tmpfile();
    REQUIRE(file_ != nullptr);
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(::fileno(file_), STDERR_FILENO);
}

StderrCapture::~StderrCapture() {
    std::fflush(stderr);
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    std::fclose(file_);
}

std::string StderrCapture::text() const {
    std::string out;
    char buf[4096];
    std::rewind(file_);
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, file_)) > 0;) out.append(buf, n);
    return out;
}

int StderrCapture::count(const std::string& needle) const {
    const auto all = text();
    int n = 0;
    for (auto pos = all.find(needle); pos != std::string::npos; pos = all.find(needle, pos + 1)) ++n;
    return n;
}

LoopbackUdp::LoopbackUdp() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
}

LoopbackUdp::~LoopbackUdp() { ::close(fd_); }

DnsWire& DnsWire::u8(unsigned v) {
    bytes += static_cast<char>(v & 0xFF);
    return *this;
}

DnsWire& DnsWire::raw(std::string_view s) {
    bytes += s;
    return *this;
}

DnsWire& DnsWire::labels(std::string_view dotted) {
    std::size_t start = 0;
    while (start <= dotted.size() && !dotted.empty()) {
        auto dot = dotted.find('.', start);
        if (dot == std::string_view::npos) dot = dotted.size();
        u8(static_cast<unsigned>(dot - start)).raw(dotted.substr(start, dot - start));
        start = dot + 1;
    }
    return *this;
}

uint16_t answer_flags(unsigned char query_flags, unsigned rcode) {
    return static_cast<uint16_t>((0x84 | (query_flags & 0x01)) << 8 | 0x80 | (rcode & 0x0F));
}

std::optional<DnsQuestion> read_question(std::string_view query) {
    constexpr size_t kHeader = 12;
    if (query.size() < kHeader) return std::nullopt;
    DnsQuestion q;
    q.id = static_cast<uint16_t>(static_cast<unsigned char>(query[0]) << 8 | static_cast<unsigned char>(query[1]));
    size_t pos = kHeader;
    while (pos < query.size() && query[pos] != 0) {
        const auto len = static_cast<unsigned char>(query[pos]);
        if (len > 63 || pos + 1 + len > query.size()) return std::nullopt;
        if (!q.name.empty()) q.name += '.';
        q.name.append(query.substr(pos + 1, len));
        pos += 1 + len;
    }
    // The root label, then type and class.
    if (pos + 1 + 4 > query.size()) return std::nullopt;
    q.type = static_cast<uint16_t>(static_cast<unsigned char>(query[pos + 1]) << 8 |
                                   static_cast<unsigned char>(query[pos + 2]));
    q.end = pos + 1 + 4;
    return q;
}

}  // namespace smtpscreen::test
