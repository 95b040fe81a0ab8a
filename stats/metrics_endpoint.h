#pragma once
// The Prometheus endpoint (stats.listen; smtpscreen(8), METRICS): a small HTTP/1.1
// server on an event loop that runs no SMTP session, so a scraper, slow or hostile,
// never delays a client's banner. Everything a scraper can make it hold is bounded:
// at most kMaxConnections at once (more are closed at accept), one request per
// connection read within kReadDeadlineMs of the accept (a slow drip does not extend
// it), the request's URL and headers bounded by HttpRequestReader, reads into one
// buffer the whole endpoint shares. Every answer closes the connection.
#include <uv.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "core/address.h"
#include "core/uv_handle.h"

namespace smtpscreen {

class MetricsEndpoint {
public:
    static constexpr size_t kMaxConnections = 16;
    static constexpr uint64_t kReadDeadlineMs = 5000;
    static constexpr size_t kReadSize = 4096;

    // The body of a 200: the metrics, rendered at each scrape.
    using Render = std::function<std::string()>;

    // Binds and listens on address (on the loop's thread, before the loop runs).
    // Throws std::runtime_error naming the address and what to do.
    MetricsEndpoint(uv_loop_t* loop, const Endpoint& address, Render render);
    ~MetricsEndpoint();
    MetricsEndpoint(const MetricsEndpoint&) = delete;
    MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

    // Closes the listener and every scraper's connection.
    void close();

    // The endpoint's own metrics, in the text format, for the end of each 200's body.
    std::string own_metrics() const;

private:
    struct Scraper;
    void on_connection(int status);
    void on_read(Scraper& s, ssize_t nread);
    void answer(Scraper& s, int status, bool head);
    void on_deadline(Scraper& s);
    void drop(Scraper& s);
    void count(int status);

    uv_loop_t* loop_;
    Render render_;
    UvHandle<uv_tcp_t> listener_;
    std::unordered_map<Scraper*, std::unique_ptr<Scraper>> scrapers_;
    std::array<char, kReadSize> buffer_{};
    // Answers by status (kStatuses' order), and connections closed at accept for the cap.
    static constexpr std::array<int, 8> kStatuses{200, 400, 404, 405, 408, 413, 414, 431};
    std::array<uint64_t, kStatuses.size()> answered_{};
    uint64_t over_cap_ = 0;
};

}  // namespace smtpscreen
