#include "proxy/tls_ticket_keys.h"

#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <system_error>
#include <vector>

namespace smtpscreen {

TlsTicketKeys::TlsTicketKeys() { mbedtls_cipher_init(&cipher_); }
TlsTicketKeys::~TlsTicketKeys() { mbedtls_cipher_free(&cipher_); }

std::unique_ptr<TlsTicketKeys> TlsTicketKeys::load(const std::string& path, mbedtls_ctr_drbg_context* drbg,
                                                   std::string* error) {
    unsigned char bytes[kFileSize + 1];
    std::size_t n = 0;
    {
        std::FILE* f = std::fopen(path.c_str(), "rb");
        if (!f) {
            *error = fmt::format("tls.ticket_key_file {}: cannot read the file: {} (check the path and that the "
                                 "smtpscreen user may read it, also after dropping root: SIGHUP reloads it)",
                                 path, std::error_code(errno, std::generic_category()).message());
            return nullptr;
        }
        n = std::fread(bytes, 1, sizeof bytes, f);  // one byte more than needed: a longer file is refused
        std::fclose(f);
    }
    if (n != kFileSize) {
        mbedtls_platform_zeroize(bytes, sizeof bytes);
        *error = fmt::format("tls.ticket_key_file {}: {} bytes, not {} (make it with: openssl rand {} > {}; "
                             "give every instance the same file)",
                             path, n > kFileSize ? fmt::format("more than {}", kFileSize) : std::to_string(n),
                             kFileSize, kFileSize, path);
        return nullptr;
    }
    std::unique_ptr<TlsTicketKeys> keys(new TlsTicketKeys());
    keys->drbg_ = drbg;
    std::memcpy(keys->name_.data(), bytes, kNameSize);
    unsigned char key[32];
    int ret = mbedtls_sha256_ret(bytes + kNameSize, kFileSize - kNameSize, key, 0);
    mbedtls_platform_zeroize(bytes, sizeof bytes);
    if (ret == 0) ret = mbedtls_cipher_setup(&keys->cipher_, mbedtls_cipher_info_from_type(MBEDTLS_CIPHER_AES_256_GCM));
    if (ret == 0) ret = mbedtls_cipher_setkey(&keys->cipher_, key, 256, MBEDTLS_ENCRYPT);
    mbedtls_platform_zeroize(key, sizeof key);
    if (ret != 0) {
        *error = fmt::format("tls.ticket_key_file {}: cannot set up AES-256-GCM (-0x{:04X})", path,
                             static_cast<unsigned>(-ret));
        return nullptr;
    }
    return keys;
}

int TlsTicketKeys::write(void* self, const mbedtls_ssl_session* session, unsigned char* start,
                         const unsigned char* end, std::size_t* tlen, std::uint32_t* lifetime) {
    auto* keys = static_cast<TlsTicketKeys*>(self);
    *tlen = 0;
    std::size_t plain_len = 0;
    mbedtls_ssl_session_save(session, nullptr, 0, &plain_len);  // the size it needs
    const std::size_t room = static_cast<std::size_t>(end - start);
    if (room < kNameSize + kIvSize + plain_len + kTagSize) return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
    std::vector<unsigned char> plain(plain_len);
    int ret = mbedtls_ssl_session_save(session, plain.data(), plain.size(), &plain_len);
    if (ret != 0) return ret;

    unsigned char* name = start;
    unsigned char* iv = name + kNameSize;
    unsigned char* sealed = iv + kIvSize;
    std::memcpy(name, keys->name_.data(), kNameSize);
    ret = mbedtls_ctr_drbg_random(keys->drbg_, iv, kIvSize);
    if (ret == 0) {
        std::lock_guard<std::mutex> lock(keys->mutex_);
        std::size_t sealed_len = 0;
        ret = mbedtls_cipher_auth_encrypt_ext(&keys->cipher_, iv, kIvSize, name, kNameSize, plain.data(), plain_len,
                                              sealed, plain_len + kTagSize, &sealed_len, kTagSize);
        if (ret == 0) *tlen = kNameSize + kIvSize + sealed_len;
    }
    mbedtls_platform_zeroize(plain.data(), plain.size());
    *lifetime = kLifetimeSeconds;
    return ret;
}

int TlsTicketKeys::parse(void* self, mbedtls_ssl_session* session, unsigned char* buf, std::size_t len) {
    auto* keys = static_cast<TlsTicketKeys*>(self);
    if (len < kNameSize + kIvSize + kTagSize) return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
    // Another key's ticket (another file, or mbedTLS's own before the file was set): a
    // full handshake, without trying to decrypt it.
    if (std::memcmp(buf, keys->name_.data(), kNameSize) != 0) return MBEDTLS_ERR_SSL_INVALID_MAC;
    const unsigned char* iv = buf + kNameSize;
    const unsigned char* sealed = iv + kIvSize;
    const std::size_t sealed_len = len - kNameSize - kIvSize;
    std::vector<unsigned char> plain(sealed_len - kTagSize);
    std::size_t plain_len = 0;
    int ret;
    {
        std::lock_guard<std::mutex> lock(keys->mutex_);
        ret = mbedtls_cipher_auth_decrypt_ext(&keys->cipher_, iv, kIvSize, buf, kNameSize, sealed, sealed_len,
                                              plain.data(), plain.size(), &plain_len, kTagSize);
    }
    if (ret == MBEDTLS_ERR_CIPHER_AUTH_FAILED) return MBEDTLS_ERR_SSL_INVALID_MAC;
    if (ret == 0) ret = mbedtls_ssl_session_load(session, plain.data(), plain_len);
    mbedtls_platform_zeroize(plain.data(), plain.size());
    if (ret != 0) return ret;
    // The session's start is the time of its full handshake: a ticket renewed on resumption
    // keeps it, so a session lives kLifetimeSeconds at most, as with mbedTLS's own tickets.
    const std::time_t now = std::time(nullptr);
    if (session->start > now || now - session->start > static_cast<std::time_t>(kLifetimeSeconds)) {
        mbedtls_ssl_session_free(session);
        mbedtls_ssl_session_init(session);
        return MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
    }
    return 0;
}

}  // namespace smtpscreen
