#pragma once
// tls.ticket_key_file: session-ticket keys from a file, so that instances behind one load
// balancer open each other's tickets (RFC 5077; nginx's ssl_session_ticket_key). mbedTLS
// 2.28's own ticket context (mbedtls_ssl_ticket) makes random keys and has no way to set
// them (mbedtls_ssl_ticket_rotate came in 3.x), so the ticket callbacks are ours:
//
//   file    80 random bytes (openssl rand 80 > ticket.key, mode 0600), read at start and
//           at every SIGHUP (with the rest of the TLS setup): 16 bytes of key name, then
//           64 of secret, whose SHA-256 is the AES-256-GCM key.
//   ticket  key name (16) | IV (12, from the CTR-DRBG) | AES-256-GCM of the session as
//           mbedtls_ssl_session_save writes it | tag (16). The name is the additional
//           data: a ticket of another key is refused before any decryption.
//   expiry  an hour (Postfix's smtpd_tls_session_cache_timeout), from the session's
//           start time, which the ticket carries.
//
// Threads: one object serves every loop and pool thread of a context; the cipher context
// is behind a mutex (a GCM context keeps state between its calls), the DRBG locks itself.
#include <mbedtls/cipher.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ssl.h>

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace smtpscreen {

class TlsTicketKeys {
public:
    static constexpr std::size_t kFileSize = 80;
    static constexpr std::uint32_t kLifetimeSeconds = 3600;

    // Reads `path`. nullptr and *error ("tls.ticket_key_file FILE: ...") when it cannot be
    // read or is not exactly kFileSize bytes.
    static std::unique_ptr<TlsTicketKeys> load(const std::string& path, mbedtls_ctr_drbg_context* drbg,
                                               std::string* error);
    ~TlsTicketKeys();
    TlsTicketKeys(const TlsTicketKeys&) = delete;
    TlsTicketKeys& operator=(const TlsTicketKeys&) = delete;

    // For mbedtls_ssl_conf_session_tickets_cb, with this object as p_ticket.
    static int write(void* self, const mbedtls_ssl_session* session, unsigned char* start, const unsigned char* end,
                     std::size_t* tlen, std::uint32_t* lifetime);
    static int parse(void* self, mbedtls_ssl_session* session, unsigned char* buf, std::size_t len);

private:
    TlsTicketKeys();
    static constexpr std::size_t kNameSize = 16;
    static constexpr std::size_t kIvSize = 12;
    static constexpr std::size_t kTagSize = 16;

    std::array<unsigned char, kNameSize> name_{};
    mbedtls_ctr_drbg_context* drbg_ = nullptr;
    std::mutex mutex_;  // guards cipher_
    mbedtls_cipher_context_t cipher_;
};

}  // namespace smtpscreen
