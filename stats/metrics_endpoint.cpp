#include "stats/metrics_endpoint.h"

#include <fmt/format.h>

#include <stdexcept>

#include "stats/http_request.h"

namespace smtpscreen {

namespace {

// Prometheus's text exposition format, version 0.0.4.
constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

struct MetricsEndpoint::Scraper {
    MetricsEndpoint& owner;
    UvHandle<uv_tcp_t> tcp;
    UvHandle<uv_timer_t> deadline;
    HttpRequestReader request;
    bool answering = false;

    explicit Scraper(MetricsEndpoint& o)
        : owner(o),
          tcp([&o](uv_tcp_t* t) { return uv_tcp_init(o.loop_, t); }, this),
          deadline([&o](uv_timer_t* t) { return uv_timer_init(o.loop_, t); }, this) {}
};

// A response on its way to the kernel: libuv needs the bytes until the write's callback.
struct PendingWrite {
    uv_write_t req{};
    std::string bytes;
};

MetricsEndpoint::MetricsEndpoint(uv_loop_t* loop, const Endpoint& address, Render render)
    : loop_(loop), render_(std::move(render)) {
    listener_ = UvHandle<uv_tcp_t>([loop](uv_tcp_t* t) { return uv_tcp_init(loop, t); }, this);
    int rc = listener_ ? uv_tcp_bind(listener_.get(), address.sa(), 0) : UV_ENOMEM;
    if (rc == 0) {
        rc = uv_listen(listener_.stream(), 64, [](uv_stream_t* s, int status) {
            if (auto* self = static_cast<MetricsEndpoint*>(s->data)) self->on_connection(status);
        });
    }
    if (rc != 0) {
        const char* hint = rc == UV_EADDRINUSE ? " (another program listens there; change stats.listen)"
                           : rc == UV_EACCES   ? " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                           : rc == UV_EADDRNOTAVAIL ? " (no interface has this address; fix stats.listen)"
                                                    : "";
        throw std::runtime_error(
            fmt::format("stats.listen: cannot listen on {}: {}{}", address.ip_port(), uv_strerror(rc), hint));
    }
}

MetricsEndpoint::~MetricsEndpoint() { close(); }

void MetricsEndpoint::close() {
    listener_.close();
    scrapers_.clear();  // each Scraper's handles close themselves
}

void MetricsEndpoint::on_connection(int status) {
    if (status != 0) return;  // EMFILE and the like: libuv has closed the connection
    auto scraper = std::make_unique<Scraper>(*this);
    if (!scraper->tcp || !scraper->deadline || uv_accept(listener_.stream(), scraper->tcp.stream()) != 0) return;
    if (scrapers_.size() >= kMaxConnections) {
        ++over_cap_;  // closed at once: idle scrapers cannot pile up descriptors
        return;
    }
    Scraper* s = scraper.get();
    scrapers_.emplace(s, std::move(scraper));
    uv_timer_start(
        s->deadline.get(),
        [](uv_timer_t* t) {
            if (auto* sc = static_cast<Scraper*>(t->data)) sc->owner.on_deadline(*sc);
        },
        kReadDeadlineMs, 0);
    uv_read_start(
        s->tcp.stream(),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
            // One loop thread, and each read is consumed before the next alloc: one buffer serves all.
            auto* sc = static_cast<Scraper*>(h->data);
            *buf = sc ? uv_buf_init(sc->owner.buffer_.data(), kReadSize) : uv_buf_init(nullptr, 0);
        },
        [](uv_stream_t* st, ssize_t nread, const uv_buf_t*) {
            if (auto* sc = static_cast<Scraper*>(st->data)) sc->owner.on_read(*sc, nread);
        });
}

void MetricsEndpoint::on_read(Scraper& s, ssize_t nread) {
    if (nread < 0) return drop(s);  // EOF or reset before a whole request
    if (nread == 0 || s.answering) return;
    if (s.request.feed({buffer_.data(), static_cast<size_t>(nread)}) == HttpRequestReader::State::Done) {
        answer(s, s.request.status(), s.request.head());
    }
}

void MetricsEndpoint::on_deadline(Scraper& s) {
    if (s.answering) return drop(s);  // it does not read its answer either
    answer(s, 408, false);
}

void MetricsEndpoint::answer(Scraper& s, int status, bool head) {
    s.answering = true;
    uv_read_stop(s.tcp.stream());
    count(status);
    std::string body;
    if (status == 200) body = render_() + own_metrics();
    else body = fmt::format("{} {}\n", status, http_reason(status));
    auto* w = new PendingWrite;
    w->req.data = w;
    w->bytes = http_response(status, status == 200 ? kContentType : "text/plain; charset=utf-8", body, head);
    uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    int rc = uv_write(&w->req, s.tcp.stream(), &buf, 1, [](uv_write_t* req, int) {
        auto* pending = static_cast<PendingWrite*>(req->data);
        // The connection's owner cleared data when it closed it first.
        auto* sc = static_cast<Scraper*>(req->handle->data);
        delete pending;
        if (sc) sc->owner.drop(*sc);
    });
    if (rc != 0) {
        delete w;
        drop(s);
    }
}

// The Scraper goes, and with it its handles (UvHandle closes them).
void MetricsEndpoint::drop(Scraper& s) { scrapers_.erase(&s); }

void MetricsEndpoint::count(int status) {
    for (size_t i = 0; i < kStatuses.size(); ++i) {
        if (kStatuses[i] == status) ++answered_[i];
    }
}

std::string MetricsEndpoint::own_metrics() const {
    std::string out =
        "# HELP smtpscreen_stats_requests_total Requests to this endpoint, by the HTTP status answered.\n"
        "# TYPE smtpscreen_stats_requests_total counter\n";
    for (size_t i = 0; i < kStatuses.size(); ++i) {
        out += fmt::format("smtpscreen_stats_requests_total{{code=\"{}\"}} {}\n", kStatuses[i], answered_[i]);
    }
    out += fmt::format(
        "# HELP smtpscreen_stats_connections_refused_total Connections to this endpoint closed at accept: {} were "
        "open already.\n"
        "# TYPE smtpscreen_stats_connections_refused_total counter\n"
        "smtpscreen_stats_connections_refused_total {}\n",
        kMaxConnections, over_cap_);
    return out;
}

}  // namespace smtpscreen
