#include "proxy/tls_stream.h"

#include <mbedtls/asn1.h>
#include <mbedtls/cipher.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/ssl_internal.h>  // mbedtls_ssl_transform_free (TlsStream::take_keys)
#include <mbedtls/x509_crt.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "core/address.h"

namespace smtpscreen {

namespace {

// Whether the certificate's subjectAltName lists `ip` (4 or 16 octets) as an iPAddress
// ([7] OCTET STRING, RFC 5280 §4.2.1.6). mbedTLS 2.28 keeps only the DNS names of the
// extension, so it is read here from the DER of the extensions, which mbedTLS has
// already parsed and verified; every length is still checked against its container.
bool subject_alt_name_lists_ip(const mbedtls_x509_crt& crt, std::string_view ip) {
    unsigned char* p = crt.v3_ext.p;
    if (p == nullptr || crt.v3_ext.len == 0) return false;
    const unsigned char* end = p + crt.v3_ext.len;
    size_t len = 0;
    // Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension
    if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) return false;
    end = p + len;
    while (p < end) {
        // Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
        if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) return false;
        unsigned char* const extension_end = p + len;
        mbedtls_asn1_buf oid{};
        oid.tag = MBEDTLS_ASN1_OID;
        if (mbedtls_asn1_get_tag(&p, extension_end, &oid.len, MBEDTLS_ASN1_OID) != 0) return false;
        oid.p = p;
        p += oid.len;
        int critical = 0;
        if (p < extension_end && *p == MBEDTLS_ASN1_BOOLEAN && mbedtls_asn1_get_bool(&p, extension_end, &critical) != 0) {
            return false;
        }
        if (mbedtls_asn1_get_tag(&p, extension_end, &len, MBEDTLS_ASN1_OCTET_STRING) != 0) return false;
        if (MBEDTLS_OID_CMP(MBEDTLS_OID_SUBJECT_ALT_NAME, &oid) == 0) {
            // GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName
            const unsigned char* const value_end = p + len;
            if (mbedtls_asn1_get_tag(&p, value_end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) {
                return false;
            }
            const unsigned char* const names_end = p + len;
            while (p < names_end) {
                const unsigned char tag = *p++;
                if (mbedtls_asn1_get_len(&p, names_end, &len) != 0) return false;
                if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && len == ip.size() &&
                    std::memcmp(p, ip.data(), len) == 0) {
                    return true;
                }
                p += len;
            }
            return false;
        }
        p = extension_end;
    }
    return false;
}

// The handshake step mbedTLS was in, for "handshake failed in <step>" log lines.
const char* step_name(int state, bool client) {
    switch (state) {
    case MBEDTLS_SSL_HELLO_REQUEST: return "start";
    case MBEDTLS_SSL_CLIENT_HELLO: return client ? "sending client hello" : "reading client hello";
    case MBEDTLS_SSL_SERVER_HELLO: return client ? "reading server hello" : "sending server hello";
    case MBEDTLS_SSL_SERVER_CERTIFICATE: return client ? "reading server certificate" : "sending server certificate";
    case MBEDTLS_SSL_SERVER_KEY_EXCHANGE: return client ? "reading server key exchange" : "sending server key exchange";
    case MBEDTLS_SSL_CERTIFICATE_REQUEST: return "certificate request";
    case MBEDTLS_SSL_SERVER_HELLO_DONE: return client ? "reading server hello done" : "sending server hello done";
    case MBEDTLS_SSL_CLIENT_CERTIFICATE: return "client certificate";
    case MBEDTLS_SSL_CLIENT_KEY_EXCHANGE: return client ? "sending client key exchange" : "reading client key exchange";
    case MBEDTLS_SSL_CERTIFICATE_VERIFY: return "certificate verify";
    case MBEDTLS_SSL_CLIENT_CHANGE_CIPHER_SPEC:
        return client ? "sending client change cipher spec" : "reading client change cipher spec";
    case MBEDTLS_SSL_CLIENT_FINISHED: return client ? "sending client finished" : "reading client finished";
    case MBEDTLS_SSL_SERVER_CHANGE_CIPHER_SPEC:
        return client ? "reading server change cipher spec" : "sending server change cipher spec";
    case MBEDTLS_SSL_SERVER_FINISHED: return client ? "reading server finished" : "sending server finished";
    case MBEDTLS_SSL_FLUSH_BUFFERS: return "flush";
    case MBEDTLS_SSL_HANDSHAKE_WRAPUP: return "wrapup";
    case MBEDTLS_SSL_SERVER_NEW_SESSION_TICKET:
        return client ? "reading new session ticket" : "sending new session ticket";
    default: return "unknown step";
    }
}

// Whether the message of this handshake state comes from the peer: its step reads that
// message before doing anything else, so with no input it only asks for more.
bool peer_sends(int state, bool client) {
    switch (state) {
    case MBEDTLS_SSL_CLIENT_HELLO:
    case MBEDTLS_SSL_CLIENT_CERTIFICATE:
    case MBEDTLS_SSL_CLIENT_KEY_EXCHANGE:
    case MBEDTLS_SSL_CERTIFICATE_VERIFY:
    case MBEDTLS_SSL_CLIENT_CHANGE_CIPHER_SPEC:
    case MBEDTLS_SSL_CLIENT_FINISHED: return !client;
    default: return client;
    }
}

// Whether the suite's ServerKeyExchange carries an ephemeral key (and, with a
// certificate, its signature): static RSA and ECDH suites send none, mbedTLS skips the
// step. An unknown suite is taken to cost what the others do.
bool ephemeral_key_exchange(int suite_id) {
    const mbedtls_ssl_ciphersuite_t* suite = mbedtls_ssl_ciphersuite_from_id(suite_id);
    if (suite == nullptr) return true;
    switch (suite->key_exchange) {
    case MBEDTLS_KEY_EXCHANGE_RSA:
    case MBEDTLS_KEY_EXCHANGE_ECDH_RSA:
    case MBEDTLS_KEY_EXCHANGE_ECDH_ECDSA:
    case MBEDTLS_KEY_EXCHANGE_PSK:
    case MBEDTLS_KEY_EXCHANGE_RSA_PSK: return false;
    default: return true;
    }
}

const char* alert_name(unsigned char alert) {
    switch (alert) {
    case MBEDTLS_SSL_ALERT_MSG_CLOSE_NOTIFY: return "close_notify";
    case MBEDTLS_SSL_ALERT_MSG_UNEXPECTED_MESSAGE: return "unexpected_message";
    case MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC: return "bad_record_mac";
    case MBEDTLS_SSL_ALERT_MSG_RECORD_OVERFLOW: return "record_overflow";
    case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE: return "handshake_failure";
    case MBEDTLS_SSL_ALERT_MSG_BAD_CERT: return "bad_certificate";
    case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT: return "unsupported_certificate";
    case MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED: return "certificate_revoked";
    case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED: return "certificate_expired";
    case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN: return "certificate_unknown";
    case MBEDTLS_SSL_ALERT_MSG_ILLEGAL_PARAMETER: return "illegal_parameter";
    case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA: return "unknown_ca";
    case MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED: return "access_denied";
    case MBEDTLS_SSL_ALERT_MSG_DECODE_ERROR: return "decode_error";
    case MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR: return "decrypt_error";
    case MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION: return "protocol_version";
    case MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY: return "insufficient_security";
    case MBEDTLS_SSL_ALERT_MSG_INTERNAL_ERROR: return "internal_error";
    case MBEDTLS_SSL_ALERT_MSG_INAPROPRIATE_FALLBACK: return "inappropriate_fallback";
    case MBEDTLS_SSL_ALERT_MSG_USER_CANCELED: return "user_canceled";
    case MBEDTLS_SSL_ALERT_MSG_NO_RENEGOTIATION: return "no_renegotiation";
    case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_EXT: return "unsupported_extension";
    case MBEDTLS_SSL_ALERT_MSG_UNRECOGNIZED_NAME: return "unrecognized_name";
    default: return "unknown alert";
    }
}

std::string printable_prefix(std::string_view bytes) {
    std::string out;
    for (char c : bytes.substr(0, 40)) {
        if (c == '\r' || c == '\n') break;
        out += (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    return out;
}

}  // namespace

TlsSession::TlsSession() { mbedtls_ssl_session_init(&session_); }
TlsSession::~TlsSession() { mbedtls_ssl_session_free(&session_); }

std::unique_ptr<TlsStream> TlsStream::server(std::shared_ptr<const TlsServerContext> context, std::string* error) {
    std::unique_ptr<TlsStream> s(new TlsStream());
    const mbedtls_ssl_config* conf = context->ssl_config();
    s->server_context_ = std::move(context);
    if (!s->setup(conf, error)) return nullptr;
    return s;
}

std::unique_ptr<TlsStream> TlsStream::client(std::shared_ptr<const TlsClientContext> context,
                                             const std::string& server_name, const TlsSession* resume,
                                             std::string* error) {
    std::unique_ptr<TlsStream> s(new TlsStream());
    const mbedtls_ssl_config* conf = context->ssl_config();
    s->client_context_ = std::move(context);
    s->is_client_ = true;
    if (!s->setup(conf, error)) return nullptr;
    s->server_name_ = server_name;
    if (auto ip = Endpoint::parse_ip(server_name)) {
        s->expected_ip_ = std::string(ip->raw());
        s->name_checked_ = true;
    } else if (!server_name.empty()) {
        const int ret = mbedtls_ssl_set_hostname(&s->ssl_, server_name.c_str());
        if (ret != 0) {
            *error = "TLS server name " + server_name + ": " + mbedtls_error_text(ret);
            return nullptr;
        }
        s->name_checked_ = true;
    }
    if (resume && resume->valid()) {
        // A failure here only costs the resumption: the handshake goes the full way.
        mbedtls_ssl_set_session(&s->ssl_, &resume->session_);
    }
    return s;
}

bool TlsStream::setup(const mbedtls_ssl_config* conf, std::string* error) {
    mbedtls_ssl_init(&ssl_);
    ssl_initialized_ = true;
    const int ret = mbedtls_ssl_setup(&ssl_, conf);
    if (ret != 0) {
        *error = "TLS session setup: " + mbedtls_error_text(ret);
        return false;
    }
    // No timeouts in mbedTLS: the session's own timer (tls.handshake_timeout) covers them.
    mbedtls_ssl_set_bio(&ssl_, this, &TlsStream::bio_send, &TlsStream::bio_recv, nullptr);
    return true;
}

TlsStream::~TlsStream() {
    // mbedtls_ssl_free wipes and frees the record buffers, the handshake state and the
    // session; the context (and its ssl_config) is released after, by the member dtors.
    if (ssl_initialized_) mbedtls_ssl_free(&ssl_);
}

void TlsStream::KeysDeleter::operator()(mbedtls_ssl_transform* keys) const {
    mbedtls_ssl_transform_free(keys);
    mbedtls_free(keys);
}

// mbedtls_ssl_free frees ssl.transform (transform_in and transform_out point to it once
// the handshake is over; a handshake in progress keeps its own in ssl.handshake).
TlsStream::Keys TlsStream::take_keys() {
    if (!ssl_initialized_ || ssl_.handshake != nullptr || ssl_.transform == nullptr) return nullptr;
    Keys keys(std::exchange(ssl_.transform, nullptr));
    ssl_.transform_in = nullptr;
    ssl_.transform_out = nullptr;
    state_ = State::Failed;  // no record goes in or out without its keys
    return keys;
}

int TlsStream::bio_send(void* self, const unsigned char* buf, std::size_t len) {
    auto* s = static_cast<TlsStream*>(self);
    // mbedTLS writes at most one record per call, so len fits in an int.
    s->out_.append(reinterpret_cast<const char*>(buf), len);
    return static_cast<int>(len);
}

int TlsStream::bio_recv(void* self, unsigned char* buf, std::size_t len) {
    auto* s = static_cast<TlsStream*>(self);
    const std::size_t avail = s->in_.size() - s->in_offset_;
    if (avail == 0) return MBEDTLS_ERR_SSL_WANT_READ;
    const std::size_t n = std::min({len, avail, static_cast<std::size_t>(INT32_MAX)});
    std::memcpy(buf, s->in_.data() + s->in_offset_, n);
    s->in_offset_ += n;
    if (s->in_offset_ == s->in_.size()) {
        s->in_.clear();
        s->in_offset_ = 0;
    }
    return static_cast<int>(n);
}

bool TlsStream::feed_ciphertext(std::string_view bytes) {
    if (state_ == State::Failed) return false;
    if (in_offset_ > 0) {
        in_.erase(0, in_offset_);
        in_offset_ = 0;
    }
    if (in_.size() + bytes.size() > kMaxCiphertextIn) {
        state_ = State::Failed;
        error_ = fmt::format("TLS input over {} bytes not consumed (the peer sends faster than records complete)",
                             kMaxCiphertextIn);
        in_.clear();
        return false;
    }
    if (!got_bytes_ && !bytes.empty()) {
        got_bytes_ = true;
        first_bytes_ = printable_prefix(bytes);
        first_byte_is_text_ = (bytes[0] >= 'A' && bytes[0] <= 'Z') || (bytes[0] >= 'a' && bytes[0] <= 'z');
    }
    in_.append(bytes);
    return true;
}

void TlsStream::take_ciphertext(std::string& out) {
    if (out.empty())
        out.swap(out_);
    else
        out.append(out_);
    out_.clear();
}

void TlsStream::fail(const std::string& what, int ret) {
    state_ = State::Failed;
    error_ = what + ": " + mbedtls_error_text(ret);
    if (ret == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE && ssl_.in_msg != nullptr) {
        // mbedTLS leaves the alert record in in_msg: [level, description].
        error_ += fmt::format("; peer sent alert {} ({})", ssl_.in_msg[1], alert_name(ssl_.in_msg[1]));
    }
    if (ret == MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION)
        error_ += "; the peer does not speak TLS 1.2 (SSLv3, TLS 1.0 and 1.1 are refused)";
    if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        name_mismatch_ = (mbedtls_ssl_get_verify_result(&ssl_) & MBEDTLS_X509_BADCERT_CN_MISMATCH) != 0;
        char buf[512];
        const int n = mbedtls_x509_crt_verify_info(buf, sizeof buf, "", mbedtls_ssl_get_verify_result(&ssl_));
        if (n > 0) {
            std::string info(buf, static_cast<std::size_t>(n));
            std::replace(info.begin(), info.end(), '\n', ';');
            while (!info.empty() && (info.back() == ';' || info.back() == ' ')) info.pop_back();
            error_ += "; " + info;
        }
    }
    if (!handshake_done() && first_byte_is_text_ && !is_client_)
        error_ += fmt::format("; the peer sent plaintext, not TLS: \"{}\"", first_bytes_);
}

const char* TlsStream::next_step() const { return step_name(ssl_.state, is_client_); }

// The states of mbedTLS 2.28's ssl_srv.c and ssl_cli.c whose step may do a public-key
// operation (tls_stream.h, "Where the steps run"); the others parse, hash, derive keys
// with the PRF, or seal and open records and tickets (AES-GCM): microseconds.
bool TlsStream::next_step_costly() const {
    // A client certificate is never asked for by smtpscreen's server context, and the
    // backend leg has none to give; were either configured, their steps would cost.
    const bool certificate_checked = ssl_.conf->authmode != MBEDTLS_SSL_VERIFY_NONE;
    switch (ssl_.state) {
    case MBEDTLS_SSL_SERVER_CERTIFICATE: return is_client_ && certificate_checked;  // the chain's signatures
    case MBEDTLS_SSL_SERVER_KEY_EXCHANGE:
        return ssl_.session_negotiate == nullptr || ephemeral_key_exchange(ssl_.session_negotiate->ciphersuite);
    case MBEDTLS_SSL_CLIENT_KEY_EXCHANGE: return true;  // ECDH agreement, or RSA decryption
    case MBEDTLS_SSL_CLIENT_CERTIFICATE: return !is_client_ && certificate_checked;
    case MBEDTLS_SSL_CERTIFICATE_VERIFY: return is_client_ ? ssl_.conf->key_cert != nullptr : certificate_checked;
    default: return false;
    }
}

// Bytes fed and not yet read by mbedTLS, or a message mbedTLS holds (a record with
// several handshake messages in it). A record split across reads counts as input: its
// step may then go to the pool and come back asking for more, as any step could before.
bool TlsStream::input_pending() const { return in_.size() > in_offset_ || mbedtls_ssl_check_pending(&ssl_) != 0; }

TlsStream::Handshake TlsStream::handshake(Steps steps) {
    switch (state_) {
    case State::Open:
    case State::Closed: return Handshake::Done;
    case State::Failed: return Handshake::Failed;
    case State::Handshaking: break;
    }
    while (ssl_.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        // A costly step that reads, with nothing to read, runs here: it only answers
        // WANT_READ, and a trip to the pool would bring back just that.
        if (steps == Steps::Cheap && next_step_costly() && (!peer_sends(ssl_.state, is_client_) || input_pending()))
            return Handshake::NeedPool;
        // A resumed handshake (session ticket) skips the certificate on both sides;
        // mbedTLS 2.28 has no public "was resumed" call once the handshake is over.
        if (ssl_.state == MBEDTLS_SSL_SERVER_CERTIFICATE) saw_certificate_ = true;
        const int step = ssl_.state;
        const int ret = mbedtls_ssl_handshake_step(&ssl_);
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) return Handshake::NeedMore;
        if (ret != 0) {
            fail(fmt::format("TLS handshake failed in {}", step_name(step, is_client_)), ret);
            return Handshake::Failed;
        }
    }
    if (is_client_ && !expected_ip_.empty() && client_context_->verifies()) {
        const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl_);
        if (peer == nullptr || !subject_alt_name_lists_ip(*peer, expected_ip_)) {
            state_ = State::Failed;
            name_mismatch_ = true;
            error_ = fmt::format("TLS handshake failed: the certificate does not list IP address {} in its "
                                 "subjectAltName",
                                 server_name_);
            return Handshake::Failed;
        }
    }
    state_ = State::Open;
    resumed_ = !saw_certificate_;
    return Handshake::Done;
}

bool TlsStream::read_plaintext(std::string& out) {
    if (state_ == State::Handshaking) return true;
    if (state_ != State::Open) return false;
    unsigned char buf[16384];
    for (;;) {
        const int ret = mbedtls_ssl_read(&ssl_, buf, sizeof buf);
        if (ret > 0) {
            out.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(ret));
            continue;
        }
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) return true;
        if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == 0) {
            state_ = State::Closed;
            return false;
        }
        fail("TLS read failed", ret);
        return false;
    }
}

bool TlsStream::write_plaintext(std::string_view text) {
    // The peer's close_notify ends only its own direction, as TLS 1.3 has it (RFC 8446
    // §6.1): the replies still due go out until we send ours. RFC 5246 §7.2.1 would drop
    // them, which loses the 250 and 221 of a client that half-closes after its QUIT.
    if ((state_ != State::Open && state_ != State::Closed) || close_sent_) return false;
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    std::size_t left = text.size();
    while (left > 0) {
        // mbedtls_ssl_write takes at most one record's worth per call.
        const int ret = mbedtls_ssl_write(&ssl_, p, left);
        if (ret > 0) {
            p += ret;
            left -= static_cast<std::size_t>(ret);
            continue;
        }
        // WANT_WRITE cannot happen: bio_send always takes everything.
        fail("TLS write failed", ret);
        return false;
    }
    return true;
}

void TlsStream::close_notify() {
    if (close_sent_ || !handshake_done()) return;
    close_sent_ = true;
    mbedtls_ssl_close_notify(&ssl_);  // an error here changes nothing: we close anyway
}

std::string TlsStream::protocol() const { return mbedtls_ssl_get_version(&ssl_); }

std::string TlsStream::cipher() const {
    const char* name = mbedtls_ssl_get_ciphersuite(&ssl_);
    return name ? name : "unknown";
}

int TlsStream::cipher_bits() const {
    const char* name = mbedtls_ssl_get_ciphersuite(&ssl_);
    if (!name) return 0;
    const mbedtls_ssl_ciphersuite_t* suite = mbedtls_ssl_ciphersuite_from_string(name);
    if (!suite) return 0;
    const mbedtls_cipher_info_t* info = mbedtls_cipher_info_from_type(suite->cipher);
    return info ? static_cast<int>(info->key_bitlen) : 0;
}

bool TlsStream::peer_verified() const {
    return is_client_ && handshake_done() && client_context_->verifies() && mbedtls_ssl_get_verify_result(&ssl_) == 0;
}

bool TlsStream::save_session(TlsSession& out) const {
    mbedtls_ssl_session_free(&out.session_);
    mbedtls_ssl_session_init(&out.session_);
    out.valid_ = is_client_ && handshake_done() && mbedtls_ssl_get_session(&ssl_, &out.session_) == 0;
    return out.valid_;
}

namespace {
std::string cipher_part(const TlsStream& stream) {
    const int bits = stream.cipher_bits();
    return fmt::format("{} with cipher {} ({}/{} bits)", stream.protocol(), openssl_cipher_name(stream.cipher()), bits,
                       bits);
}
}  // namespace

std::string postfix_tls_log_line(const Endpoint& client, const TlsStream& stream) {
    // smtpd asks for no client certificate, so every client is "Anonymous", as in Postfix.
    return fmt::format("Anonymous TLS connection established from {}: {}", client.to_string(), cipher_part(stream));
}

std::string postfix_tls_backend_log_line(const Endpoint& backend, const TlsStream& stream) {
    // Postfix's smtp(8) levels: Verified = chain and name, Trusted = chain, Untrusted = neither.
    const char* trust = !stream.peer_verified() ? "Untrusted" : stream.name_checked() ? "Verified" : "Trusted";
    return fmt::format("{} TLS connection established to {}: {}", trust, backend.to_string(), cipher_part(stream));
}

std::string TlsStream::encrypt(std::string_view text) {
    std::string ciphertext;
    if (text.empty()) return ciphertext;
    write_plaintext(text);
    take_ciphertext(ciphertext);
    return ciphertext;
}

}  // namespace smtpscreen
