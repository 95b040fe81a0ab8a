// proxy/session_settings.h: the configuration and TLS contexts a session started under,
// one counted reference each session holds. Every reference keeps both alive, the last
// one frees them, and a reload's new settings leave the old ones to their sessions.
#include <doctest/doctest.h>

#include <memory>
#include <utility>

#include "proxy/session_settings.h"

using namespace smtpscreen;

TEST_CASE("session settings: one pointer a session, counted; the last reference frees the config") {
    static_assert(sizeof(SessionSettings::Ref) == sizeof(void*), "a session holds one pointer");
    auto config = std::make_shared<Config>();
    auto tls = std::make_shared<TlsContexts>();
    std::weak_ptr<const Config> config_alive = config;
    std::weak_ptr<const TlsContexts> tls_alive = tls;

    SessionSettings::Ref current = SessionSettings::make(std::move(config), std::move(tls));
    CHECK(current.use_count() == 1);
    SessionSettings::Ref session_a = current;
    SessionSettings::Ref session_b = session_a;
    CHECK(current.use_count() == 3);
    CHECK(&session_b->config() == &current->config());
    CHECK(&session_b->tls() == &current->tls());

    // A reload: the worker takes new settings; its sessions keep theirs.
    current = SessionSettings::make(std::make_shared<Config>(), std::make_shared<TlsContexts>());
    CHECK(current.use_count() == 1);
    CHECK(session_a.use_count() == 2);
    CHECK_FALSE(config_alive.expired());

    SessionSettings::Ref moved = std::move(session_a);
    CHECK_FALSE(session_a);
    CHECK(moved.use_count() == 2);
    session_b = SessionSettings::Ref();
    CHECK(moved.use_count() == 1);
    CHECK_FALSE(config_alive.expired());
    moved = SessionSettings::Ref();
    CHECK(config_alive.expired());
    CHECK(tls_alive.expired());
    CHECK(current.use_count() == 1);
}
