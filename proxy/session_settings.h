#pragma once
// What a session starts under and keeps to its end: the Config and the TLS contexts
// made from it (a reload never changes them under a session: docs/design.md, "The
// process"). One reference to both, counted by the worker's loop alone: a session
// holds a pointer (8 bytes) where two shared_ptr took 32 of every idle client's
// (docs/design.md, "Memory per connection").
#include <cassert>
#include <cstdint>
#include <memory>
#include <utility>

#include "config/config.h"
#include "proxy/tls_config.h"

namespace smtpscreen {

class SessionSettings {
public:
    // A counted reference. Not thread-safe, on purpose: each worker makes its own
    // SessionSettings (the Config and the contexts inside are shared across threads by
    // their shared_ptr), and every reference to it lives and dies on that worker's loop.
    class Ref {
    public:
        Ref() = default;
        Ref(const Ref& other) : settings_(other.settings_) {
            if (settings_) ++settings_->refs_;
        }
        Ref(Ref&& other) noexcept : settings_(std::exchange(other.settings_, nullptr)) {}
        Ref& operator=(Ref other) noexcept {
            std::swap(settings_, other.settings_);
            return *this;
        }
        ~Ref() {
            if (settings_ && --settings_->refs_ == 0) delete settings_;
        }

        explicit operator bool() const { return settings_ != nullptr; }
        const SessionSettings& operator*() const { return *settings_; }
        const SessionSettings* operator->() const { return settings_; }
        uint32_t use_count() const { return settings_ ? settings_->refs_ : 0; }

    private:
        friend class SessionSettings;
        explicit Ref(SessionSettings* settings) : settings_(settings) {}
        SessionSettings* settings_ = nullptr;
    };

    static Ref make(std::shared_ptr<const Config> config, std::shared_ptr<const TlsContexts> tls) {
        assert(config && tls);
        return Ref(new SessionSettings(std::move(config), std::move(tls)));
    }
    SessionSettings(const SessionSettings&) = delete;
    SessionSettings& operator=(const SessionSettings&) = delete;

    const Config& config() const { return *config_; }
    const TlsContexts& tls() const { return *tls_; }

private:
    SessionSettings(std::shared_ptr<const Config> config, std::shared_ptr<const TlsContexts> tls)
        : config_(std::move(config)), tls_(std::move(tls)) {}
    ~SessionSettings() = default;

    std::shared_ptr<const Config> config_;
    std::shared_ptr<const TlsContexts> tls_;
    uint32_t refs_ = 1;
};

}  // namespace smtpscreen
