// TLS engine (docs/design.md, "TLS"): contexts, in-memory streams, resumption, refusals, log lines.
// Certificates are made per run with the openssl command in a temporary directory.
#include <doctest/doctest.h>
#include <malloc.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <string>
#include <vector>

#include "core/address.h"
#include "proxy/handshake_pool.h"
#include "proxy/handshake_queue.h"
#include "proxy/handshake_step.h"
#include "proxy/tls_context.h"
#include "proxy/tls_stream.h"
#include "fixtures.h"

using namespace smtpscreen;
using namespace smtpscreen::test;

namespace {

// One set of throwaway certificates for the whole run (generating RSA keys is slow).
class TestPki {
public:
    static const TestPki& get() {
        static TestPki pki;
        return pki;
    }
    std::string path(const std::string& name) const { return dir_.path(name); }
    bool ok() const { return ok_; }
    const std::string& log() const { return log_; }

    TestPki(const TestPki&) = delete;
    TestPki& operator=(const TestPki&) = delete;

private:
    TestPki() {
        dir_.write("server.ext",
              "subjectAltName=DNS:mx.test\nbasicConstraints=CA:FALSE\n"
              "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n");
        const std::string ca_ext = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign";
        ok_ = run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=smtpscreen test CA' " + ca_ext +
                  " -keyout ca.key -out ca.crt") &&
              run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=other test CA' " + ca_ext +
                  " -keyout ca2.key -out ca2.crt") &&
              // RSA server certificate, PKCS#8 key
              run("openssl req -new -newkey rsa:2048 -nodes -subj /CN=mx.test -keyout rsa.key -out rsa.csr") &&
              sign("rsa", "ca") &&
              // ECDSA P-256 server certificate, also as a traditional SEC1 key
              run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=mx.test "
                  "-keyout ec.key -out ec.csr") &&
              sign("ec", "ca") && run("openssl ec -in ec.key -out ec-sec1.key") &&
              // a certificate from another CA
              run("openssl req -new -newkey rsa:2048 -nodes -subj /CN=mx.test -keyout other.key -out other.csr") &&
              sign("other", "ca2") &&
              // a short RSA key, for the warning
              run("openssl req -new -newkey rsa:1024 -nodes -subj /CN=mx.test -keyout short.key -out short.csr") &&
              sign("short", "ca") &&
              run("openssl pkey -in rsa.key -aes256 -passout pass:secret -out encrypted.key") &&
              run("cat rsa.crt ca.crt > chain.pem") && run("cat ca.crt rsa.crt > chain-reversed.pem") &&
              run("cat rsa.crt rsa.key > combined.pem");
    }
    bool sign(const std::string& name, const std::string& ca) {
        return run("openssl x509 -req -in " + name + ".csr -CA " + ca + ".crt -CAkey " + ca + ".key -CAcreateserial " +
                   "-days 2 -extfile server.ext -out " + name + ".crt");
    }
    bool run(const std::string& command) {
        const std::string full = "cd '" + dir_.dir().string() + "' && ( " + command + " ) >>openssl.log 2>&1";
        if (std::system(full.c_str()) == 0) return true;
        std::ifstream in(dir_.path("openssl.log"));
        std::stringstream ss;
        ss << in.rdbuf();
        log_ = "failed: " + command + "\n" + ss.str();
        return false;
    }
    TempDir dir_{"smtpscreen-tls"};
    std::string log_;
    bool ok_ = false;
};

const TestPki& pki() {
    const TestPki& p = TestPki::get();
    INFO(p.log());
    REQUIRE(p.ok());
    return p;
}

std::shared_ptr<TlsServerContext> server_ctx(const std::string& cert, const std::string& key,
                                             const std::string& ciphers = "") {
    std::string error;
    auto ctx = TlsServerContext::load(pki().path(cert), pki().path(key), ciphers, &error);
    INFO(error);
    REQUIRE(ctx);
    return ctx;
}

std::shared_ptr<TlsClientContext> client_ctx(const std::string& ca = "", const std::string& ciphers = "") {
    std::string error;
    auto ctx = TlsClientContext::load(ca.empty() ? "" : pki().path(ca), ciphers, &error);
    INFO(error);
    REQUIRE(ctx);
    return ctx;
}

std::unique_ptr<TlsStream> new_server(const std::shared_ptr<TlsServerContext>& ctx) {
    std::string error;
    auto s = TlsStream::server(ctx, &error);
    INFO(error);
    REQUIRE(s);
    return s;
}

std::unique_ptr<TlsStream> new_client(const std::shared_ptr<TlsClientContext>& ctx, const std::string& name = "",
                                      const TlsSession* resume = nullptr) {
    std::string error;
    auto c = TlsStream::client(ctx, name, resume, &error);
    INFO(error);
    REQUIRE(c);
    return c;
}

// Moves ciphertext both ways until both sides are done or failed, or nothing moves.
struct Outcome {
    TlsStream::Handshake client;
    TlsStream::Handshake server;
};
Outcome handshake(TlsStream& client, TlsStream& server) {
    Outcome o{TlsStream::Handshake::NeedMore, TlsStream::Handshake::NeedMore};
    for (int round = 0; round < 20; ++round) {
        o.client = client.handshake();
        std::string wire;
        client.take_ciphertext(wire);
        if (!wire.empty()) server.feed_ciphertext(wire);
        const bool moved = !wire.empty();
        o.server = server.handshake();
        wire.clear();
        server.take_ciphertext(wire);
        if (!wire.empty()) client.feed_ciphertext(wire);
        if (!moved && wire.empty()) break;
    }
    return o;
}

void require_done(TlsStream& client, TlsStream& server) {
    const Outcome o = handshake(client, server);
    INFO("client: " << client.error());
    INFO("server: " << server.error());
    REQUIRE(o.client == TlsStream::Handshake::Done);
    REQUIRE(o.server == TlsStream::Handshake::Done);
}

// Sends `text` from one stream to the other and returns what the receiver decrypted.
std::string transfer(TlsStream& from, TlsStream& to, std::string_view text) {
    REQUIRE(from.write_plaintext(text));
    std::string wire;
    from.take_ciphertext(wire);
    std::string got;
    // Feed in socket-sized pieces, as the loop would.
    for (std::size_t pos = 0; pos < wire.size(); pos += 65536) {
        REQUIRE(to.feed_ciphertext(std::string_view(wire).substr(pos, 65536)));
        REQUIRE(to.read_plaintext(got));
    }
    return got;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

std::string load_error(const std::string& cert, const std::string& key, const std::string& ciphers = "") {
    std::string error;
    auto ctx = TlsServerContext::load(cert, key, ciphers, &error);
    CHECK_FALSE(ctx);
    return error;
}

}  // namespace

TEST_CASE("tls: RSA handshake in memory, data both ways, close_notify, Postfix log line") {
    auto server = new_server(server_ctx("rsa.crt", "rsa.key"));
    auto client = new_client(client_ctx());
    CHECK_FALSE(server->write_plaintext("too early"));
    require_done(*client, *server);

    CHECK(server->protocol() == "TLSv1.2");
    CHECK(server->cipher() == "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256");  // server order, first RSA suite
    CHECK(server->cipher_bits() == 128);
    CHECK_FALSE(server->resumed());
    CHECK_FALSE(client->resumed());
    CHECK(postfix_tls_log_line(*Endpoint::parse("192.0.2.1:4321"), *server) ==
          "Anonymous TLS connection established from [192.0.2.1]:4321: TLSv1.2 with cipher "
          "ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)");
    CHECK(postfix_tls_backend_log_line(*Endpoint::parse("127.0.0.1:10025"), *client) ==
          "Untrusted TLS connection established to [127.0.0.1]:10025: TLSv1.2 with cipher "
          "ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)");

    CHECK(transfer(*client, *server, "EHLO client.example\r\n") == "EHLO client.example\r\n");
    // Several records, and more than one socket read's worth.
    std::string big(200000, 'x');
    for (std::size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + i % 26);
    CHECK(transfer(*server, *client, big) == big);

    client->close_notify();
    CHECK_FALSE(client->write_plaintext("after close"));
    std::string wire, got;
    client->take_ciphertext(wire);
    REQUIRE_FALSE(wire.empty());
    REQUIRE(server->feed_ciphertext(wire));
    CHECK_FALSE(server->read_plaintext(got));
    CHECK(server->closed());
    CHECK_FALSE(server->failed());
    CHECK(got.empty());
}

TEST_CASE("tls: ECDSA certificate (SEC1 key), and a chain file with the key in another file") {
    SUBCASE("ecdsa") {
        auto server = new_server(server_ctx("ec.crt", "ec-sec1.key"));
        auto client = new_client(client_ctx("ca.crt"), "mx.test");
        require_done(*client, *server);
        CHECK(server->cipher() == "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256");
        CHECK(client->peer_verified());
        CHECK(contains(postfix_tls_log_line(*Endpoint::parse("[2001:db8::1]:25"), *server),
                       "from [2001:db8::1]:25: TLSv1.2 with cipher ECDHE-ECDSA-AES128-GCM-SHA256 (128/128 bits)"));
    }
    SUBCASE("chain file") {
        auto server = new_server(server_ctx("chain.pem", "rsa.key"));
        auto client = new_client(client_ctx("ca.crt"), "mx.test");
        require_done(*client, *server);
        CHECK(client->peer_verified());
        CHECK(contains(postfix_tls_backend_log_line(*Endpoint::parse("127.0.0.1:10025"), *client),
                       "Verified TLS connection established to [127.0.0.1]:10025: TLSv1.2"));
    }
    SUBCASE("certificate and key in one file") {
        auto server = new_server(server_ctx("combined.pem", "combined.pem"));
        auto client = new_client(client_ctx("ca.crt"));
        require_done(*client, *server);
        CHECK(client->peer_verified());
        CHECK(contains(postfix_tls_backend_log_line(*Endpoint::parse("127.0.0.1:10025"), *client), "Trusted TLS"));
    }
}

TEST_CASE("tls: session tickets resume a returning client") {
    auto ctx = server_ctx("rsa.crt", "rsa.key");
    auto cctx = client_ctx("ca.crt");

    TlsSession saved;
    {
        auto server = new_server(ctx);
        auto client = new_client(cctx, "mx.test");
        CHECK_FALSE(client->save_session(saved));  // nothing yet
        require_done(*client, *server);
        CHECK_FALSE(server->resumed());
        REQUIRE(client->save_session(saved));
        CHECK_FALSE(server->save_session(saved) == true);  // server side has nothing to save
        REQUIRE(client->save_session(saved));
    }
    {
        auto server = new_server(ctx);
        auto client = new_client(cctx, "mx.test", &saved);
        require_done(*client, *server);
        CHECK(server->resumed());
        CHECK(client->resumed());
        CHECK(client->peer_verified());  // the verification result travels with the session
        CHECK(transfer(*client, *server, "EHLO again\r\n") == "EHLO again\r\n");
        CHECK(transfer(*server, *client, "250 ok\r\n") == "250 ok\r\n");
    }
    {
        // A reload makes a new ticket key: the old ticket is refused, the handshake goes the full way.
        auto server = new_server(server_ctx("rsa.crt", "rsa.key"));
        auto client = new_client(cctx, "mx.test", &saved);
        require_done(*client, *server);
        CHECK_FALSE(server->resumed());
        CHECK_FALSE(client->resumed());
    }
}

// Drives both streams as proxy/connection.cpp does: the loop's steps first
// (Steps::Cheap); on NeedPool, the step that asked and the rest up to the next wait for
// the peer (Steps::All, which the pool runs; here on this thread). Returns the steps
// that asked for the pool, in order, as "server: sending server key exchange; ...".
std::string pool_steps_of_handshake(TlsStream& client, TlsStream& server) {
    std::string asked;
    auto advance = [&asked](TlsStream& stream, const char* side) {
        TlsStream::Handshake result = stream.handshake(TlsStream::Steps::Cheap);
        if (result == TlsStream::Handshake::NeedPool) {
            asked += (asked.empty() ? "" : "; ") + std::string(side) + ": " + stream.next_step();
            result = stream.handshake(TlsStream::Steps::All);
        }
        return result;
    };
    for (int round = 0; round < 20; ++round) {
        const TlsStream::Handshake c = advance(client, "client");
        std::string wire;
        client.take_ciphertext(wire);
        if (!wire.empty()) REQUIRE(server.feed_ciphertext(wire));
        const bool moved = !wire.empty();
        const TlsStream::Handshake s = advance(server, "server");
        wire.clear();
        server.take_ciphertext(wire);
        if (!wire.empty()) REQUIRE(client.feed_ciphertext(wire));
        INFO("client: " << client.error());
        INFO("server: " << server.error());
        REQUIRE(c != TlsStream::Handshake::Failed);
        REQUIRE(s != TlsStream::Handshake::Failed);
        if (!moved && wire.empty()) break;
    }
    REQUIRE(client.handshake_done());
    REQUIRE(server.handshake_done());
    return asked;
}

TEST_CASE("tls: a full handshake asks for the pool at its key exchange, a resumed one never") {
    // docs/design.md, "TLS": the loop runs every step without a public-key operation.
    struct Kind {
        const char* cert;
        const char* key;
    };
    SUBCASE("ECDHE, with an RSA and with an ECDSA certificate") {
        for (const Kind kind : {Kind{"rsa.crt", "rsa.key"}, Kind{"ec.crt", "ec-sec1.key"}}) {
            const std::string cert = kind.cert;
            CAPTURE(cert);
            auto ctx = server_ctx(kind.cert, kind.key);
            TlsSession saved;
            {
                // Unverified backend leg: the client's first costly step is the signature on
                // the server's ECDHE key; from there the pool runs its own key exchange and
                // Finished too, up to the server's ticket.
                auto server = new_server(ctx);
                auto client = new_client(client_ctx());
                CHECK(pool_steps_of_handshake(*client, *server) ==
                      "server: sending server key exchange; client: reading server key exchange; "
                      "server: reading client key exchange");
                CHECK_FALSE(server->resumed());
                REQUIRE(client->save_session(saved));
            }
            {
                // A verified one checks the chain first.
                auto server = new_server(ctx);
                auto client = new_client(client_ctx("ca.crt"), "mx.test");
                CHECK(pool_steps_of_handshake(*client, *server) ==
                      "server: sending server key exchange; client: reading server certificate; "
                      "server: reading client key exchange");
            }
            {
                // With the first session's ticket: no step of either side leaves the loop.
                auto server = new_server(ctx);
                auto client = new_client(client_ctx(), "", &saved);
                CHECK(pool_steps_of_handshake(*client, *server) == "");
                CHECK(server->resumed());
                CHECK(client->resumed());
                CHECK(transfer(*client, *server, "EHLO resumed.example\r\n") == "EHLO resumed.example\r\n");
            }
        }
    }
    SUBCASE("a static-RSA suite has no ServerKeyExchange to compute: only the RSA decryption goes") {
        const std::string suite = "TLS-RSA-WITH-AES-128-GCM-SHA256";
        auto server = new_server(server_ctx("rsa.crt", "rsa.key", suite));
        auto client = new_client(client_ctx("", suite));
        CHECK(pool_steps_of_handshake(*client, *server) ==
              "client: sending client key exchange; server: reading client key exchange");
        CHECK(server->cipher() == suite);
    }
}

TEST_CASE("tls: application data in the same flight as the client's Finished is readable at Done") {
    // In a resumed handshake the client sends Finished last and may send its EHLO with it.
    auto ctx = server_ctx("rsa.crt", "rsa.key");
    auto cctx = client_ctx();
    TlsSession saved;
    {
        auto server = new_server(ctx);
        auto client = new_client(cctx);
        require_done(*client, *server);
        REQUIRE(client->save_session(saved));
    }
    auto server = new_server(ctx);
    auto client = new_client(cctx, "", &saved);
    std::string wire;
    REQUIRE(client->handshake() == TlsStream::Handshake::NeedMore);  // ClientHello
    client->take_ciphertext(wire);
    REQUIRE(server->feed_ciphertext(wire));
    REQUIRE(server->handshake() == TlsStream::Handshake::NeedMore);  // ServerHello..Finished
    wire.clear();
    server->take_ciphertext(wire);
    REQUIRE(client->feed_ciphertext(wire));
    REQUIRE(client->handshake() == TlsStream::Handshake::Done);  // CCS, Finished
    REQUIRE(client->write_plaintext("EHLO pipelined.example\r\n"));
    wire.clear();
    client->take_ciphertext(wire);  // Finished and the EHLO record in one read
    REQUIRE(server->feed_ciphertext(wire));
    REQUIRE(server->handshake() == TlsStream::Handshake::Done);
    CHECK(server->resumed());
    std::string got;
    CHECK(server->read_plaintext(got));
    CHECK(got == "EHLO pipelined.example\r\n");
}

TEST_CASE("tls: backend verification against backend.tls_ca") {
    SUBCASE("a certificate from another CA is refused") {
        auto server = new_server(server_ctx("other.crt", "other.key"));
        auto client = new_client(client_ctx("ca.crt"), "mx.test");
        const Outcome o = handshake(*client, *server);
        CHECK(o.client == TlsStream::Handshake::Failed);
        CHECK(o.server == TlsStream::Handshake::Failed);  // it got our fatal alert
        CHECK(contains(client->error(), "reading server certificate"));
        CHECK(contains(client->error(), "not correctly signed by the trusted CA"));
        CHECK(contains(server->error(), "peer sent alert"));
    }
    SUBCASE("a name that does not match is refused") {
        auto server = new_server(server_ctx("rsa.crt", "rsa.key"));
        auto client = new_client(client_ctx("ca.crt"), "wrong.test");
        CHECK(handshake(*client, *server).client == TlsStream::Handshake::Failed);
        CHECK(contains(client->error(), "Common Name"));
    }
    SUBCASE("without a CA file the same certificate is accepted, unverified") {
        auto server = new_server(server_ctx("other.crt", "other.key"));
        auto client = new_client(client_ctx());
        require_done(*client, *server);
        CHECK_FALSE(client->peer_verified());
    }
}

TEST_CASE("tls: certificate and key errors name the file and say what to do") {
    const TestPki& p = pki();
    std::string e = load_error(p.path("rsa.crt"), p.path("ec.key"));
    CHECK(contains(e, "tls.key " + p.path("ec.key")));
    CHECK(contains(e, "does not match"));
    CHECK(contains(e, p.path("rsa.crt")));

    e = load_error(p.path("rsa.crt"), p.path("other.key"));  // same type, other key
    CHECK(contains(e, "tls.key " + p.path("other.key")));
    CHECK(contains(e, "does not match"));

    e = load_error(p.path("chain-reversed.pem"), p.path("rsa.key"));
    CHECK(contains(e, "tls.cert " + p.path("chain-reversed.pem")));
    CHECK(contains(e, "must come first"));

    e = load_error(p.path("missing.crt"), p.path("rsa.key"));
    CHECK(contains(e, "tls.cert " + p.path("missing.crt")));
    CHECK(contains(e, "No such file"));

    e = load_error(p.path("rsa.crt"), p.path("missing.key"));
    CHECK(contains(e, "tls.key " + p.path("missing.key")));

    e = load_error(p.path("rsa.key"), p.path("rsa.key"));  // a key where the certificate belongs
    CHECK(contains(e, "tls.cert " + p.path("rsa.key")));
    CHECK(contains(e, "no certificate"));

    e = load_error(p.path("rsa.crt"), p.path("rsa.crt"));  // a certificate where the key belongs
    CHECK(contains(e, "tls.key " + p.path("rsa.crt")));
    CHECK(contains(e, "no private key"));

    e = load_error(p.path("rsa.crt"), p.path("encrypted.key"));
    CHECK(contains(e, "tls.key " + p.path("encrypted.key")));
    CHECK(contains(e, "passphrase"));

    e = load_error(p.path("rsa.crt"), p.path("rsa.key"), "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256");
    CHECK(contains(e, "tls.ciphers"));
    CHECK(contains(e, "none of the suites"));

    std::string error;
    CHECK_FALSE(TlsClientContext::load(p.path("missing-ca.crt"), "", &error));
    CHECK(contains(error, "backend.tls_ca " + p.path("missing-ca.crt")));
}

TEST_CASE("tls: warnings for a short RSA key, none for a good certificate") {
    CHECK(server_ctx("rsa.crt", "rsa.key")->warnings().empty());
    auto ctx = server_ctx("short.crt", "short.key");
    REQUIRE(ctx->warnings().size() == 1);
    CHECK(contains(ctx->warnings()[0], "1024 bits"));
}

TEST_CASE("tls: cipher lists") {
    std::string error;
    SUBCASE("unknown and weak suites are refused with the reason") {
        const std::vector<std::pair<std::string, std::string>> refused = {
            {"TLS-FOO-WITH-BAR", "unknown suite 'TLS-FOO-WITH-BAR'"},
            {"ECDHE-RSA-AES128-GCM-SHA256", "mbedTLS calls it TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"},
            {"TLS-RSA-WITH-NULL-SHA256", "NULL"},
            {"TLS-RSA-WITH-RC4-128-SHA", "RC4"},
            {"TLS-ECDHE-RSA-WITH-3DES-EDE-CBC-SHA", "SWEET32"},
            {"TLS-RSA-WITH-RC4-128-MD5", "RC4"},
            {"TLS-PSK-WITH-AES-128-GCM-SHA256", "pre-shared"},
            {"TLS-ECDHE-PSK-WITH-AES-128-CBC-SHA256", "pre-shared"},
            {"TLS-DH-ANON-WITH-AES-128-CBC-SHA", "anonymous"},
            {"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256, TLS-PSK-WITH-AES-128-GCM-SHA256", "pre-shared"},
            {" , ", "no suite"},
        };
        for (const auto& [list_binding, why] : refused) {
            const auto& list = list_binding;  // clang < 16 cannot capture a structured binding (CAPTURE)
            error.clear();
            CAPTURE(list);
            CHECK(parse_tls_ciphers(list, &error).empty());
            CHECK(contains(error, why));
        }
        CHECK(contains(load_error(pki().path("rsa.crt"), pki().path("rsa.key"), "TLS-RSA-WITH-RC4-128-SHA"),
                       "tls.ciphers: suite TLS-RSA-WITH-RC4-128-SHA is refused"));
    }
    SUBCASE("the default list is ECDHE with AEAD only") {
        const std::vector<int> ids = parse_tls_ciphers("", &error);
        REQUIRE(ids.size() == 7);
        CHECK(ids.back() == 0);
        for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
            const std::string name = mbedtls_ssl_get_ciphersuite_name(ids[i]);
            CAPTURE(name);
            CHECK(name.rfind("TLS-ECDHE-", 0) == 0);
            CHECK((contains(name, "-GCM-") || contains(name, "CHACHA20-POLY1305")));
        }
    }
    SUBCASE("an override is what gets negotiated; names are case-insensitive, duplicates dropped") {
        CHECK(parse_tls_ciphers("tls-ecdhe-rsa-with-aes-256-gcm-sha384,TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384", &error)
                  .size() == 2);
        auto server = new_server(server_ctx("rsa.crt", "rsa.key", "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256"));
        auto client = new_client(client_ctx());
        require_done(*client, *server);
        CHECK(server->cipher() == "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256");
        CHECK(contains(postfix_tls_log_line(*Endpoint::parse("192.0.2.1:1"), *server),
                       "with cipher ECDHE-RSA-CHACHA20-POLY1305 (256/256 bits)"));

        auto server2 = new_server(server_ctx("rsa.crt", "rsa.key", "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"));
        auto client2 = new_client(client_ctx());
        require_done(*client2, *server2);
        CHECK(contains(postfix_tls_log_line(*Endpoint::parse("192.0.2.1:1"), *server2),
                       "with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"));
    }
    SUBCASE("no suite in common fails the handshake with a reason on both sides") {
        auto server = new_server(server_ctx("rsa.crt", "rsa.key", "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"));
        auto client = new_client(client_ctx("", "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"));
        const Outcome o = handshake(*client, *server);
        CHECK(o.server == TlsStream::Handshake::Failed);
        CHECK(o.client == TlsStream::Handshake::Failed);
        CHECK(contains(server->error(), "reading client hello"));
        CHECK(contains(client->error(), "handshake_failure"));
    }
    SUBCASE("openssl names for log lines") {
        CHECK(openssl_cipher_name("TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384") == "ECDHE-ECDSA-AES256-GCM-SHA384");
        CHECK(openssl_cipher_name("TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA") == "ECDHE-RSA-AES128-SHA");
        CHECK(openssl_cipher_name("TLS-NOT-IN-TABLE") == "TLS-NOT-IN-TABLE");
    }
}

namespace {
// A bare mbedTLS client, for what TlsClientContext will not do: offer TLS 1.1 at most
// (an old sender) or a chosen curve list.
struct BareClient {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_config conf;
    mbedtls_ssl_context ssl;
    std::string in, out;

    explicit BareClient(int max_minor, const mbedtls_ecp_group_id* curves = nullptr) {
        mbedtls_entropy_init(&entropy);
        mbedtls_ctr_drbg_init(&drbg);
        mbedtls_ssl_config_init(&conf);
        mbedtls_ssl_init(&ssl);
        REQUIRE(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, nullptr, 0) == 0);
        REQUIRE(mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                            MBEDTLS_SSL_PRESET_DEFAULT) == 0);
        mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
        mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_NONE);
        mbedtls_ssl_conf_min_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_1);
        mbedtls_ssl_conf_max_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, max_minor);
        if (curves) mbedtls_ssl_conf_curves(&conf, curves);
        REQUIRE(mbedtls_ssl_setup(&ssl, &conf) == 0);
        mbedtls_ssl_set_bio(&ssl, this, send, recv, nullptr);
    }
    ~BareClient() {
        mbedtls_ssl_free(&ssl);
        mbedtls_ssl_config_free(&conf);
        mbedtls_ctr_drbg_free(&drbg);
        mbedtls_entropy_free(&entropy);
    }
    static int send(void* self, const unsigned char* buf, size_t len) {
        static_cast<BareClient*>(self)->out.append(reinterpret_cast<const char*>(buf), len);
        return static_cast<int>(len);
    }
    static int recv(void* self, unsigned char* buf, size_t len) {
        auto* c = static_cast<BareClient*>(self);
        if (c->in.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
        const size_t n = std::min(len, c->in.size());
        std::memcpy(buf, c->in.data(), n);
        c->in.erase(0, n);
        return static_cast<int>(n);
    }
};

// The NamedCurve of the ServerKeyExchange in a server's first flight (plaintext records),
// or -1: record header 5 bytes, then handshake messages of type, 24-bit length, body.
int ecdhe_curve(const std::string& flight) {
    std::string hs;
    for (std::size_t pos = 0; pos + 5 <= flight.size();) {
        const auto len = static_cast<std::size_t>(static_cast<unsigned char>(flight[pos + 3]) << 8 |
                                                  static_cast<unsigned char>(flight[pos + 4]));
        if (flight[pos] == 22) hs += flight.substr(pos + 5, len);
        pos += 5 + len;
    }
    for (std::size_t pos = 0; pos + 4 <= hs.size();) {
        const auto type = static_cast<unsigned char>(hs[pos]);
        const std::size_t len = static_cast<std::size_t>(static_cast<unsigned char>(hs[pos + 1])) << 16 |
                                static_cast<std::size_t>(static_cast<unsigned char>(hs[pos + 2])) << 8 |
                                static_cast<unsigned char>(hs[pos + 3]);
        // ServerKeyExchange (12) for ECDHE: curve_type 3 (named_curve), then the curve id.
        if (type == 12 && len >= 3 && hs[pos + 4] == 3)
            return static_cast<unsigned char>(hs[pos + 5]) << 8 | static_cast<unsigned char>(hs[pos + 6]);
        pos += 4 + len;
    }
    return -1;
}

// Runs a client hello through a fresh server and returns the ECDHE curve it chose.
int chosen_curve(const std::shared_ptr<TlsServerContext>& ctx, const std::string& client_hello) {
    auto server = new_server(ctx);
    REQUIRE(server->feed_ciphertext(client_hello));
    REQUIRE(server->handshake() == TlsStream::Handshake::NeedMore);
    std::string flight;
    server->take_ciphertext(flight);
    return ecdhe_curve(flight);
}
}  // namespace

TEST_CASE("tls: ECDHE uses X25519 or P-256 when the client offers them, not mbedTLS's P-521 first") {
    // mbedTLS's own client offers secp521r1 first; the server must still pick by its list.
    auto ctx = server_ctx("rsa.crt", "rsa.key");
    auto client = new_client(client_ctx());
    REQUIRE(client->handshake() == TlsStream::Handshake::NeedMore);
    std::string hello;
    client->take_ciphertext(hello);
    CHECK(chosen_curve(ctx, hello) == 29);  // x25519
    // The client's list is honoured when it has none of the fast ones.
    static const mbedtls_ecp_group_id kP384[] = {MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_NONE};
    BareClient p384(MBEDTLS_SSL_MINOR_VERSION_3, kP384);
    CHECK(mbedtls_ssl_handshake(&p384.ssl) == MBEDTLS_ERR_SSL_WANT_READ);
    CHECK(chosen_curve(ctx, p384.out) == 24);  // secp384r1
}

TEST_CASE("tls: a client that offers only TLS 1.1 is refused") {
    auto server = new_server(server_ctx("rsa.crt", "rsa.key"));
    BareClient client(MBEDTLS_SSL_MINOR_VERSION_2);  // TLS 1.0-1.1
    int client_ret = 0;
    TlsStream::Handshake s = TlsStream::Handshake::NeedMore;
    for (int round = 0; round < 10; ++round) {
        client_ret = mbedtls_ssl_handshake(&client.ssl);
        REQUIRE(server->feed_ciphertext(client.out));
        client.out.clear();
        s = server->handshake();
        server->take_ciphertext(client.in);
        if (s != TlsStream::Handshake::NeedMore) break;
    }
    CHECK(s == TlsStream::Handshake::Failed);
    CHECK(contains(server->error(), "reading client hello"));
    CHECK(contains(server->error(), "does not speak TLS 1.2"));
    client_ret = mbedtls_ssl_handshake(&client.ssl);
    CHECK(client_ret == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE);  // protocol_version alert
}

TEST_CASE("tls: garbage, plaintext and floods fail with a reason") {
    auto ctx = server_ctx("rsa.crt", "rsa.key");
    SUBCASE("plaintext SMTP where TLS belongs") {
        auto server = new_server(ctx);
        REQUIRE(server->feed_ciphertext("EHLO bot.example\r\nMAIL FROM:<a@b>\r\n"));
        CHECK(server->handshake() == TlsStream::Handshake::Failed);
        CHECK(server->failed());
        CHECK(contains(server->error(), "TLS handshake failed in reading client hello"));
        CHECK(contains(server->error(), "plaintext, not TLS: \"EHLO bot.example\""));
        std::string got;
        CHECK_FALSE(server->read_plaintext(got));
        CHECK(server->handshake() == TlsStream::Handshake::Failed);  // stays failed
    }
    SUBCASE("binary garbage with a handshake record header") {
        auto server = new_server(ctx);
        std::string junk("\x16\x03\x03\x00\x30", 5);
        junk += std::string(0x30, '\xAB');
        REQUIRE(server->feed_ciphertext(junk));
        CHECK(server->handshake() == TlsStream::Handshake::Failed);
        CHECK(contains(server->error(), "reading client hello: SSL - "));
        CHECK_FALSE(contains(server->error(), "plaintext"));
    }
    SUBCASE("garbage after the handshake") {
        auto server = new_server(ctx);
        auto client = new_client(client_ctx());
        require_done(*client, *server);
        std::string junk("\x17\x03\x03\x00\x20", 5);
        junk += std::string(0x20, '\x01');
        REQUIRE(server->feed_ciphertext(junk));
        std::string got;
        CHECK_FALSE(server->read_plaintext(got));
        CHECK(server->failed());
        CHECK(contains(server->error(), "TLS read failed"));
    }
    SUBCASE("unconsumed ciphertext is bounded") {
        auto server = new_server(ctx);
        // A record header promising 16 KiB, then the bytes dribble in without handshake() calls.
        CHECK(server->feed_ciphertext(std::string(TlsStream::kMaxCiphertextIn, '\x16')));
        CHECK_FALSE(server->feed_ciphertext("x"));
        CHECK(server->failed());
        CHECK(contains(server->error(), "not consumed"));
    }
    SUBCASE("a stalled handshake keeps asking for more") {
        auto server = new_server(ctx);
        REQUIRE(server->feed_ciphertext(std::string("\x16\x03\x01\x00", 4)));
        CHECK(server->handshake() == TlsStream::Handshake::NeedMore);
        CHECK_FALSE(server->handshake_done());
    }
}

TEST_CASE("tls: one server context shared by worker threads (tickets resume on any thread)") {
    static_assert(kShareableAcrossThreads, "this mbedTLS lacks MBEDTLS_THREADING_C: one context per thread");
    auto ctx = server_ctx("ec.crt", "ec.key");
    auto cctx = client_ctx("ca.crt");
    TlsSession saved;  // made on the main thread, resumed on the workers
    {
        auto server = new_server(ctx);
        auto client = new_client(cctx, "mx.test");
        require_done(*client, *server);
        REQUIRE(client->save_session(saved));
    }
    constexpr int kThreads = 4, kEach = 10;
    std::atomic<int> done{0}, resumed{0}, verified{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&] {
            for (int i = 0; i < kEach; ++i) {
                std::string error;
                auto server = TlsStream::server(ctx, &error);
                auto client = TlsStream::client(cctx, "mx.test", i % 2 ? &saved : nullptr, &error);
                if (!server || !client) continue;
                Outcome o{TlsStream::Handshake::NeedMore, TlsStream::Handshake::NeedMore};
                for (int round = 0; round < 10; ++round) {  // no doctest macros off the main thread
                    o.client = client->handshake();
                    std::string wire;
                    client->take_ciphertext(wire);
                    server->feed_ciphertext(wire);
                    o.server = server->handshake();
                    wire.clear();
                    server->take_ciphertext(wire);
                    client->feed_ciphertext(wire);
                }
                if (o.client == TlsStream::Handshake::Done && o.server == TlsStream::Handshake::Done) ++done;
                if (server->resumed()) ++resumed;
                if (client->peer_verified()) ++verified;
            }
        });
    for (auto& t : threads) t.join();
    CHECK(done == kThreads * kEach);
    CHECK(resumed == kThreads * kEach / 2);
    CHECK(verified == kThreads * kEach);
}

#if !defined(__SANITIZE_ADDRESS__)
TEST_CASE("tls: memory per established session is bounded") {
    auto ctx = server_ctx("rsa.crt", "rsa.key");
    auto cctx = client_ctx();
    constexpr int kSessions = 100;
    std::vector<std::unique_ptr<TlsStream>> servers, clients;
    servers.reserve(kSessions);
    clients.reserve(kSessions);
    const auto before = mallinfo2().uordblks;
    for (int i = 0; i < kSessions; ++i) {
        servers.push_back(new_server(ctx));
        clients.push_back(new_client(cctx));
        require_done(*clients.back(), *servers.back());
    }
    const auto after = mallinfo2().uordblks;
    // Both ends are counted; one end is about 2 x 16.7 KiB record buffers plus the session.
    const double per_end = static_cast<double>(after - before) / (2 * kSessions);
    MESSAGE("memory per established TLS session: " << per_end / 1024 << " KiB");
    CHECK(per_end < 48 * 1024);
    CHECK(per_end > 32 * 1024);  // proves the measurement sees the record buffers
}
#endif

// ---------------------------------------------------------------- the handshake pool

namespace {

// Threads of this process named as the pool names its own (proxy/handshake_pool.cpp).
int handshake_threads_running() {
    int n = 0;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream comm(task.path() / "comm");
        std::string name;
        std::getline(comm, name);
        if (name == "tls-handshake") ++n;
    }
    return n;
}

// A shared stream whose deleter notes the thread it ran on.
std::shared_ptr<TlsStream> watched(std::unique_ptr<TlsStream> stream, std::thread::id* freed_on) {
    return std::shared_ptr<TlsStream>(stream.release(), [freed_on](TlsStream* s) {
        *freed_on = std::this_thread::get_id();
        delete s;
    });
}

// A full handshake with the server's side driven as proxy/connection.cpp drives it: the
// cheap steps on the loop, a NeedPool step through the queue; the client answers on the
// loop thread. Counts the steps that went to the pool.
struct PooledHandshake {
    HandshakeQueue& queue;
    std::shared_ptr<TlsStream> server;
    TlsStream& client;
    int pool_steps = 0;
    bool loop_thread_only = true;  // every done() on the loop thread
    std::thread::id loop_thread = std::this_thread::get_id();
    TlsStream::Handshake server_result = TlsStream::Handshake::NeedMore;

    void advance() {
        const TlsStream::Handshake r = server->handshake(TlsStream::Steps::Cheap);
        if (r != TlsStream::Handshake::NeedPool) return stepped(r);
        ++pool_steps;
        REQUIRE(HandshakeStep::start(queue, server, 0, [this](TlsStream::Handshake done) {
            if (std::this_thread::get_id() != loop_thread) loop_thread_only = false;
            stepped(done);
        }));
    }
    void stepped(TlsStream::Handshake r) {
        server_result = r;
        if (r == TlsStream::Handshake::Failed) return;
        std::string wire;
        server->take_ciphertext(wire);
        if (wire.empty()) return;
        REQUIRE(client.feed_ciphertext(wire));
        client.handshake();
        if (r == TlsStream::Handshake::Done) return;  // the server's Finished was the last flight
        wire.clear();
        client.take_ciphertext(wire);
        if (wire.empty()) return;
        REQUIRE(server->feed_ciphertext(wire));
        advance();
    }
};

// A loop with its way to a pool of `threads`: the queue is closed and the loop run until
// the steps are back, then the pool joins its threads, then the loop is closed.
struct PoolOnLoop {
    struct Loop {
        Loop() { REQUIRE(uv_loop_init(&loop) == 0); }
        ~Loop() { CHECK(uv_loop_close(&loop) == 0); }
        uv_loop_t loop{};
    };
    explicit PoolOnLoop(int threads) : pool(threads), queue(&uv.loop, pool) {}
    ~PoolOnLoop() {
        queue.close();
        run();
    }
    void run() { uv_run(&uv.loop, UV_RUN_DEFAULT); }
    Loop uv;
    HandshakePool pool;
    HandshakeQueue queue;
};

}  // namespace

TEST_CASE("handshake pool: a full handshake's costly steps run on the pool and come back on the loop") {
    auto ctx = server_ctx("rsa.crt", "rsa.key");
    auto cctx = client_ctx();
    {
        PoolOnLoop p(2);
        CHECK(p.pool.size() == 2);
        CHECK(handshake_threads_running() == 0);  // started with the first step, not before
        std::thread::id freed_on;
        auto client = new_client(cctx);
        PooledHandshake h{p.queue, watched(new_server(ctx), &freed_on), *client};
        // The client's hello, then the server's first steps.
        client->handshake();
        std::string hello;
        client->take_ciphertext(hello);
        REQUIRE(h.server->feed_ciphertext(hello));
        h.advance();
        CHECK(p.queue.out() == 1);  // the key exchange went to the pool
        // The queue keeps the loop alive while a step is out: this returns when it is done.
        p.run();
        INFO("server: " << h.server->error());
        INFO("client: " << client->error());
        CHECK(h.server_result == TlsStream::Handshake::Done);
        CHECK(client->handshake_done());
        CHECK(h.pool_steps >= 1);
        CHECK(h.loop_thread_only);
        CHECK(p.queue.out() == 0);
        CHECK(handshake_threads_running() == 2);
        h.server.reset();
        CHECK(freed_on == std::this_thread::get_id());
    }
    CHECK(handshake_threads_running() == 0);  // joined with the pool
}

TEST_CASE("handshake pool: an abandoned step's stream is freed on the loop thread, and close() waits for it") {
    auto ctx = server_ctx("rsa.crt", "rsa.key");
    PoolOnLoop p(1);
    constexpr int kSteps = 8;
    std::vector<std::thread::id> freed(kSteps);
    std::vector<int> order;
    for (int i = 0; i < kSteps; ++i) {
        // A server stream with nothing fed: its step answers NeedMore at once.
        auto stream = watched(new_server(ctx), &freed[i]);
        auto done = [&order, i](TlsStream::Handshake r) {
            CHECK(r == TlsStream::Handshake::NeedMore);
            order.push_back(i);
        };
        HandshakeStep* step = HandshakeStep::start(p.queue, std::move(stream), 0, done);
        REQUIRE(step);
        if (i % 2) step->abandon();  // its owner went away while it ran
    }
    CHECK(p.queue.out() == kSteps);
    p.queue.close();  // the loop still runs until every step is back
    p.run();
    CHECK(p.queue.out() == 0);
    CHECK(order == std::vector<int>{0, 2, 4, 6});  // one thread: first come, first back
    for (int i = 0; i < kSteps; ++i) {
        INFO("step " << i);
        CHECK(freed[i] == std::this_thread::get_id());
    }
}

TEST_CASE("handshake pool: one thread per CPU the process may run on unless told") {
    cpu_set_t allowed;
    REQUIRE(sched_getaffinity(0, sizeof allowed, &allowed) == 0);
    CHECK(HandshakePool(0).size() == CPU_COUNT(&allowed));
    CHECK(HandshakePool(3).size() == 3);
}

TEST_CASE("handshake pool: a finished session's keys leave the stream and are freed on the pool") {
    auto ctx = server_ctx("rsa.crt", "rsa.key");
    auto cctx = client_ctx();
    {
        PoolOnLoop p(1);
        auto client = new_client(cctx);
        auto server = new_server(ctx);
        CHECK_FALSE(server->take_keys());  // no keys before the handshake
        require_done(*client, *server);
        const std::string text = transfer(*client, *server, "EHLO mx.test\r\n");
        CHECK(text == "EHLO mx.test\r\n");
        TlsStream::Keys keys = server->take_keys();
        REQUIRE(keys);
        CHECK_FALSE(server->take_keys());              // taken once
        CHECK_FALSE(server->write_plaintext("250 x"));  // and nothing is sealed without them
        p.queue.free_on_pool(std::move(keys));
        server.reset();  // the rest of the stream, on this thread
        p.queue.free_on_pool(nullptr);  // a stream that never finished its handshake has none
    }  // the pool runs what is queued before its threads end: ASan sees no leak
}
