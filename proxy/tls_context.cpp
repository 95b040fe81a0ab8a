#include "proxy/tls_context.h"

#include <mbedtls/cipher.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <system_error>

#include "core/text.h"
#include "proxy/tls_ticket_keys.h"

namespace smtpscreen {

const char* const kDefaultTlsCiphers =
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256,"
    "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256,"
    "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384,"
    "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384,"
    "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256,"
    "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256";

namespace {

// Postfix runs on OpenSSL and logs OpenSSL's names; administrators grep for those.
// Generated from `openssl ciphers -stdname` (IANA names, '_' -> '-', are mbedTLS's
// names), keeping the suites this mbedTLS knows.
struct SuiteName {
    const char* mbedtls;
    const char* openssl;
};
constexpr SuiteName kOpensslNames[] = {
    {"TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
    {"TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384"},
    {"TLS-DHE-RSA-WITH-AES-256-GCM-SHA384", "DHE-RSA-AES256-GCM-SHA384"},
    {"TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"},
    {"TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"},
    {"TLS-DHE-RSA-WITH-CHACHA20-POLY1305-SHA256", "DHE-RSA-CHACHA20-POLY1305"},
    {"TLS-ECDHE-ECDSA-WITH-AES-256-CCM-8", "ECDHE-ECDSA-AES256-CCM8"},
    {"TLS-ECDHE-ECDSA-WITH-AES-256-CCM", "ECDHE-ECDSA-AES256-CCM"},
    {"TLS-DHE-RSA-WITH-AES-256-CCM-8", "DHE-RSA-AES256-CCM8"},
    {"TLS-DHE-RSA-WITH-AES-256-CCM", "DHE-RSA-AES256-CCM"},
    {"TLS-ECDHE-ECDSA-WITH-ARIA-256-GCM-SHA384", "ECDHE-ECDSA-ARIA256-GCM-SHA384"},
    {"TLS-ECDHE-RSA-WITH-ARIA-256-GCM-SHA384", "ECDHE-ARIA256-GCM-SHA384"},
    {"TLS-DHE-RSA-WITH-ARIA-256-GCM-SHA384", "DHE-RSA-ARIA256-GCM-SHA384"},
    {"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
    {"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"},
    {"TLS-DHE-RSA-WITH-AES-128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256"},
    {"TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8", "ECDHE-ECDSA-AES128-CCM8"},
    {"TLS-ECDHE-ECDSA-WITH-AES-128-CCM", "ECDHE-ECDSA-AES128-CCM"},
    {"TLS-DHE-RSA-WITH-AES-128-CCM-8", "DHE-RSA-AES128-CCM8"},
    {"TLS-DHE-RSA-WITH-AES-128-CCM", "DHE-RSA-AES128-CCM"},
    {"TLS-ECDHE-ECDSA-WITH-ARIA-128-GCM-SHA256", "ECDHE-ECDSA-ARIA128-GCM-SHA256"},
    {"TLS-ECDHE-RSA-WITH-ARIA-128-GCM-SHA256", "ECDHE-ARIA128-GCM-SHA256"},
    {"TLS-DHE-RSA-WITH-ARIA-128-GCM-SHA256", "DHE-RSA-ARIA128-GCM-SHA256"},
    {"TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA384", "ECDHE-ECDSA-AES256-SHA384"},
    {"TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA384", "ECDHE-RSA-AES256-SHA384"},
    {"TLS-DHE-RSA-WITH-AES-256-CBC-SHA256", "DHE-RSA-AES256-SHA256"},
    {"TLS-ECDHE-ECDSA-WITH-CAMELLIA-256-CBC-SHA384", "ECDHE-ECDSA-CAMELLIA256-SHA384"},
    {"TLS-ECDHE-RSA-WITH-CAMELLIA-256-CBC-SHA384", "ECDHE-RSA-CAMELLIA256-SHA384"},
    {"TLS-DHE-RSA-WITH-CAMELLIA-256-CBC-SHA256", "DHE-RSA-CAMELLIA256-SHA256"},
    {"TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256", "ECDHE-ECDSA-AES128-SHA256"},
    {"TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256", "ECDHE-RSA-AES128-SHA256"},
    {"TLS-DHE-RSA-WITH-AES-128-CBC-SHA256", "DHE-RSA-AES128-SHA256"},
    {"TLS-ECDHE-ECDSA-WITH-CAMELLIA-128-CBC-SHA256", "ECDHE-ECDSA-CAMELLIA128-SHA256"},
    {"TLS-ECDHE-RSA-WITH-CAMELLIA-128-CBC-SHA256", "ECDHE-RSA-CAMELLIA128-SHA256"},
    {"TLS-DHE-RSA-WITH-CAMELLIA-128-CBC-SHA256", "DHE-RSA-CAMELLIA128-SHA256"},
    {"TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA", "ECDHE-ECDSA-AES256-SHA"},
    {"TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA", "ECDHE-RSA-AES256-SHA"},
    {"TLS-DHE-RSA-WITH-AES-256-CBC-SHA", "DHE-RSA-AES256-SHA"},
    {"TLS-DHE-RSA-WITH-CAMELLIA-256-CBC-SHA", "DHE-RSA-CAMELLIA256-SHA"},
    {"TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA", "ECDHE-ECDSA-AES128-SHA"},
    {"TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA", "ECDHE-RSA-AES128-SHA"},
    {"TLS-DHE-RSA-WITH-AES-128-CBC-SHA", "DHE-RSA-AES128-SHA"},
    {"TLS-DHE-RSA-WITH-CAMELLIA-128-CBC-SHA", "DHE-RSA-CAMELLIA128-SHA"},
    {"TLS-RSA-WITH-AES-256-GCM-SHA384", "AES256-GCM-SHA384"},
    {"TLS-RSA-WITH-AES-256-CCM-8", "AES256-CCM8"},
    {"TLS-RSA-WITH-AES-256-CCM", "AES256-CCM"},
    {"TLS-RSA-WITH-ARIA-256-GCM-SHA384", "ARIA256-GCM-SHA384"},
    {"TLS-RSA-WITH-AES-128-GCM-SHA256", "AES128-GCM-SHA256"},
    {"TLS-RSA-WITH-AES-128-CCM-8", "AES128-CCM8"},
    {"TLS-RSA-WITH-AES-128-CCM", "AES128-CCM"},
    {"TLS-RSA-WITH-ARIA-128-GCM-SHA256", "ARIA128-GCM-SHA256"},
    {"TLS-RSA-WITH-AES-256-CBC-SHA256", "AES256-SHA256"},
    {"TLS-RSA-WITH-CAMELLIA-256-CBC-SHA256", "CAMELLIA256-SHA256"},
    {"TLS-RSA-WITH-AES-128-CBC-SHA256", "AES128-SHA256"},
    {"TLS-RSA-WITH-CAMELLIA-128-CBC-SHA256", "CAMELLIA128-SHA256"},
    {"TLS-RSA-WITH-AES-256-CBC-SHA", "AES256-SHA"},
    {"TLS-RSA-WITH-CAMELLIA-256-CBC-SHA", "CAMELLIA256-SHA"},
    {"TLS-RSA-WITH-AES-128-CBC-SHA", "AES128-SHA"},
    {"TLS-RSA-WITH-CAMELLIA-128-CBC-SHA", "CAMELLIA128-SHA"},
};

std::string upper_trimmed(std::string_view s) { return ascii_upper(trim(s, " \t")); }

// Why a suite may not be configured, or nullptr when it may.
const char* weakness(const mbedtls_ssl_ciphersuite_t& info) {
    switch (info.cipher) {
    case MBEDTLS_CIPHER_NULL: return "it does not encrypt (NULL cipher)";
    case MBEDTLS_CIPHER_ARC4_128: return "RC4 is broken (RFC 7465)";
    case MBEDTLS_CIPHER_DES_CBC:
    case MBEDTLS_CIPHER_DES_EDE_CBC:
    case MBEDTLS_CIPHER_DES_EDE3_CBC: return "DES/3DES has 64-bit blocks (SWEET32)";
    default: break;
    }
    if (info.mac == MBEDTLS_MD_MD5) return "MD5 is broken";
    switch (info.key_exchange) {
    case MBEDTLS_KEY_EXCHANGE_PSK:
    case MBEDTLS_KEY_EXCHANGE_DHE_PSK:
    case MBEDTLS_KEY_EXCHANGE_ECDHE_PSK:
    case MBEDTLS_KEY_EXCHANGE_RSA_PSK:
    case MBEDTLS_KEY_EXCHANGE_ECJPAKE:
    case MBEDTLS_KEY_EXCHANGE_NONE:
        return "it authenticates with a pre-shared secret, not the certificate (anonymous to mail clients)";
    default: break;
    }
    if (info.flags & MBEDTLS_CIPHERSUITE_WEAK) return "mbedTLS flags it as weak";
    if (info.max_minor_ver < MBEDTLS_SSL_MINOR_VERSION_3 || info.min_minor_ver > MBEDTLS_SSL_MINOR_VERSION_3)
        return "it does not exist in TLS 1.2, the only version smtpscreen speaks";
    return nullptr;
}

// Suites this mbedTLS build has compiled out (RC4, 3DES, NULL) would otherwise be
// refused as merely "unknown"; say why they will never be accepted.
const char* weakness_by_name(std::string_view name) {
    struct Word {
        const char* word;
        const char* why;
    };
    static constexpr Word kWords[] = {
        {"-NULL-", "it does not encrypt (NULL cipher)"},
        {"-RC4-", "RC4 is broken (RFC 7465)"},
        {"-3DES-", "DES/3DES has 64-bit blocks (SWEET32)"},
        {"-DES-", "DES/3DES has 64-bit blocks (SWEET32)"},
        {"-MD5", "MD5 is broken"},
        {"-ANON-", "anonymous key exchange lets anyone in the middle read the mail"},
        {"-EXPORT", "export-grade suites are broken (FREAK/Logjam)"},
        {"PSK-", "it authenticates with a pre-shared secret, not the certificate (anonymous to mail clients)"},
    };
    const std::string padded = std::string(name) + "-";
    for (const auto& w : kWords)
        if (padded.find(w.word) != std::string::npos) return w.why;
    return nullptr;
}

const char* reverse_openssl(std::string_view name) {
    for (const auto& n : kOpensslNames)
        if (name == n.openssl) return n.mbedtls;
    return nullptr;
}

// Reads a whole file; the PEM parsers want a NUL-terminated buffer whose length counts it.
bool read_file(const std::string& path, std::string* out, std::string* why) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        *why = std::error_code(errno, std::generic_category()).message();
        return false;
    }
    constexpr std::size_t kMaxFile = 1024 * 1024;  // a chain file is a few KiB
    out->clear();
    char buf[8192];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        out->append(buf, n);
        if (out->size() > kMaxFile) {
            std::fclose(f);
            *why = "larger than 1 MiB, not a PEM certificate or key";
            return false;
        }
    }
    const bool bad = std::ferror(f);
    const int err = errno;
    std::fclose(f);
    if (bad) {
        *why = std::error_code(err, std::generic_category()).message();
        return false;
    }
    return true;
}

// The file's bytes, wiped on destruction (a private key passes through it).
struct FileBytes {
    std::string data;
    ~FileBytes() {
        if (!data.empty()) mbedtls_platform_zeroize(data.data(), data.size());
    }
    const unsigned char* bytes() const { return reinterpret_cast<const unsigned char*>(data.c_str()); }
    std::size_t size_with_nul() const { return data.size() + 1; }
};

std::string dn_of(const mbedtls_x509_crt& crt) {
    char buf[512];
    if (mbedtls_x509_dn_gets(buf, sizeof buf, &crt.subject) < 0) return "?";
    return buf;
}

std::string date_of(const mbedtls_x509_time& t) { return fmt::format("{:04}-{:02}-{:02}", t.year, t.mon, t.day); }

const char* key_kind(const mbedtls_pk_context& pk) {
    if (mbedtls_pk_can_do(&pk, MBEDTLS_PK_RSA)) return "RSA";
    if (mbedtls_pk_can_do(&pk, MBEDTLS_PK_ECDSA)) return "ECDSA";
    return mbedtls_pk_get_name(&pk);
}

// Loads PEM (or DER) certificates; `what` is the config key, for messages.
bool load_certs(mbedtls_x509_crt* chain, const char* what, const std::string& file, std::string* error) {
    FileBytes pem;
    std::string why;
    if (!read_file(file, &pem.data, &why)) {
        *error = fmt::format("{} {}: cannot read the file: {} (check the path and that the smtpscreen user may read it)",
                             what, file, why);
        return false;
    }
    const int ret = mbedtls_x509_crt_parse(chain, pem.bytes(), pem.size_with_nul());
    if (ret < 0 || chain->version == 0) {
        *error = fmt::format("{} {}: no certificate could be read: {} (give a PEM file with "
                             "-----BEGIN CERTIFICATE----- blocks)",
                             what, file, mbedtls_error_text(ret < 0 ? ret : MBEDTLS_ERR_X509_INVALID_FORMAT));
        return false;
    }
    if (ret > 0) {
        *error = fmt::format("{} {}: {} of the certificates in the file could not be parsed (remove or "
                             "replace the damaged block)",
                             what, file, ret);
        return false;
    }
    return true;
}

// Setup common to both sides: random source, TLS 1.2 only, suites, no renegotiation.
int setup_common(mbedtls_ssl_config* conf, mbedtls_entropy_context* entropy, mbedtls_ctr_drbg_context* drbg,
                 int endpoint, const std::vector<int>& suites, std::string* error) {
    static constexpr unsigned char kPersonalization[] = "smtpscreen tls";
    int ret = mbedtls_ctr_drbg_seed(drbg, mbedtls_entropy_func, entropy, kPersonalization, sizeof kPersonalization - 1);
    if (ret != 0) {
        *error = "cannot seed the TLS random generator: " + mbedtls_error_text(ret);
        return ret;
    }
    ret = mbedtls_ssl_config_defaults(conf, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        *error = "cannot set up the TLS configuration: " + mbedtls_error_text(ret);
        return ret;
    }
    mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, drbg);
    // TLS 1.2 only (docs/design.md, "TLS"): mbedTLS 2.28 has no 1.3 for us; SSLv3,
    // 1.0 and 1.1 are refused.
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(conf, suites.data());
    // mbedTLS 2.28's default puts secp521r1 first and the server follows its own order, so
    // every ECDHE would cost a P-521 multiplication (about 8x X25519: measured, a full
    // handshake ran at a third of the speed). Fast, standard curves first; no brainpool
    // or curves under 256 bits.
    static constexpr mbedtls_ecp_group_id kCurves[] = {
#if defined(MBEDTLS_ECP_DP_CURVE25519_ENABLED)
        MBEDTLS_ECP_DP_CURVE25519,
#endif
        MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_SECP521R1,
#if defined(MBEDTLS_ECP_DP_CURVE448_ENABLED)
        MBEDTLS_ECP_DP_CURVE448,
#endif
        MBEDTLS_ECP_DP_NONE};
    mbedtls_ssl_conf_curves(conf, kCurves);
    // Renegotiation buys SMTP nothing and has a history of DoS and injection bugs.
    mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    mbedtls_ssl_conf_legacy_renegotiation(conf, MBEDTLS_SSL_LEGACY_NO_RENEGOTIATION);
    return 0;
}

}  // namespace

std::string mbedtls_error_text(int ret) {
    char buf[256];
    mbedtls_strerror(ret, buf, sizeof buf);
    return fmt::format("{} (-0x{:04X})", buf, static_cast<unsigned>(-ret));
}

std::string openssl_cipher_name(std::string_view mbedtls_name) {
    for (const auto& n : kOpensslNames)
        if (mbedtls_name == n.mbedtls) return n.openssl;
    return std::string(mbedtls_name);
}

std::vector<int> parse_tls_ciphers(std::string_view list, std::string* error) {
    if (upper_trimmed(list).empty()) list = kDefaultTlsCiphers;
    std::vector<int> ids;
    std::size_t pos = 0;
    while (pos <= list.size()) {
        std::size_t end = list.find_first_of(",:", pos);  // ':' too, as OpenSSL lists are written
        if (end == std::string_view::npos) end = list.size();
        const std::string name = upper_trimmed(list.substr(pos, end - pos));
        pos = end + 1;
        if (name.empty()) continue;
        const int id = mbedtls_ssl_get_ciphersuite_id(name.c_str());
        const mbedtls_ssl_ciphersuite_t* info = id != 0 ? mbedtls_ssl_ciphersuite_from_id(id) : nullptr;
        if (!info) {
            if (const char* why = weakness_by_name(name))
                *error = fmt::format("suite {} is refused: {} (use ECDHE suites with AES-GCM or "
                                     "CHACHA20-POLY1305, or leave the key empty for the default)",
                                     name, why);
            else if (const char* mbed = reverse_openssl(name))
                *error = fmt::format("unknown suite '{}': that is the OpenSSL name; mbedTLS calls it {}", name, mbed);
            else
                *error = fmt::format("unknown suite '{}' (use mbedTLS names such as "
                                     "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256, comma-separated)",
                                     name);
            return {};
        }
        if (const char* why = weakness(*info)) {
            *error = fmt::format("suite {} is refused: {} (use ECDHE suites with AES-GCM or "
                                 "CHACHA20-POLY1305, or leave the key empty for the default)",
                                 name, why);
            return {};
        }
        if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
    if (ids.empty()) {
        *error = "no suite given (leave the key empty for the default)";
        return {};
    }
    ids.push_back(0);
    return ids;
}

// ---------------------------------------------------------------------------------------
// Server

// One certificate chain and its key (tls.cert[i], tls.key[i]).
struct Identity {
    mbedtls_x509_crt chain;
    mbedtls_pk_context key;
    Identity() {
        mbedtls_x509_crt_init(&chain);
        mbedtls_pk_init(&key);
    }
    ~Identity() {
        mbedtls_pk_free(&key);
        mbedtls_x509_crt_free(&chain);
    }
    Identity(const Identity&) = delete;
    Identity& operator=(const Identity&) = delete;
};

struct TlsServerContext::Impl {
    // Declared in dependency order; destroyed in reverse by ~Impl.
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    // mbedtls_ssl_conf_own_cert keeps pointers into them: each is allocated once.
    std::vector<std::unique_ptr<Identity>> identities;
    mbedtls_ssl_ticket_context ticket;
    std::unique_ptr<TlsTicketKeys> ticket_keys;  // tls.ticket_key_file, instead of `ticket`
    mbedtls_ssl_config conf;
    std::vector<int> suites;  // mbedtls_ssl_conf_ciphersuites keeps a pointer to it

    Impl() {
        mbedtls_entropy_init(&entropy);
        mbedtls_ctr_drbg_init(&drbg);
        mbedtls_ssl_ticket_init(&ticket);
        mbedtls_ssl_config_init(&conf);
    }
    ~Impl() {
        mbedtls_ssl_config_free(&conf);
        ticket_keys.reset();
        mbedtls_ssl_ticket_free(&ticket);
        identities.clear();
        mbedtls_ctr_drbg_free(&drbg);
        mbedtls_entropy_free(&entropy);
    }
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;
};

namespace {

// tls.cert[i] with tls.key[i]: read, parsed, and checked to be one pair usable with the
// suites. Warnings (expiry, short RSA key) are appended.
bool load_identity(Identity& id, const std::string& cert_file, const std::string& key_file,
                   const std::vector<int>& suites, std::vector<std::string>& warnings, std::string* error) {
    if (!load_certs(&id.chain, "tls.cert", cert_file, error)) return false;
    std::string why;
    {
        FileBytes pem;
        if (!read_file(key_file, &pem.data, &why)) {
            *error = fmt::format("tls.key {}: cannot read the file: {} (check the path and that the smtpscreen "
                                 "user may read it, also after dropping root: SIGHUP reloads it)",
                                 key_file, why);
            return false;
        }
        const int ret = mbedtls_pk_parse_key(&id.key, pem.bytes(), pem.size_with_nul(), nullptr, 0);
        if (ret == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || ret == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
            *error = fmt::format("tls.key {}: the key is protected by a passphrase, which smtpscreen cannot "
                                 "ask for (store it unencrypted with mode 0600: openssl pkey -in {} -out NEWFILE)",
                                 key_file, key_file);
            return false;
        }
        if (ret != 0) {
            *error = fmt::format("tls.key {}: no private key could be read: {} (give a PEM RSA or ECDSA key, "
                                 "-----BEGIN PRIVATE KEY----- or -----BEGIN RSA/EC PRIVATE KEY-----)",
                                 key_file, mbedtls_error_text(ret));
            return false;
        }
    }
    if (!mbedtls_pk_can_do(&id.key, MBEDTLS_PK_RSA) && !mbedtls_pk_can_do(&id.key, MBEDTLS_PK_ECDSA)) {
        *error = fmt::format("tls.key {}: a {} key; smtpscreen needs an RSA or ECDSA key", key_file,
                             mbedtls_pk_get_name(&id.key));
        return false;
    }

    // The key must belong to the first certificate: the one mbedTLS sends as the server's.
    if (mbedtls_pk_check_pair(&id.chain.pk, &id.key) != 0) {
        int position = 1;
        for (const mbedtls_x509_crt* c = id.chain.next; c && c->version != 0; c = c->next) {
            ++position;
            if (mbedtls_pk_check_pair(&c->pk, &id.key) == 0) {
                *error = fmt::format("tls.cert {}: the key in {} belongs to certificate {} in the file ({}), but "
                                     "the server certificate must come first (put it first, then the "
                                     "intermediates)",
                                     cert_file, key_file, position, dn_of(*c));
                return false;
            }
        }
        *error = fmt::format("tls.key {}: the {} key does not match the {} certificate in {} ({}) (give the "
                             "key the certificate was issued for, or the certificate of this key; with two "
                             "pairs, list the keys in the order of their certificates)",
                             key_file, key_kind(id.key), key_kind(id.chain.pk), cert_file, dn_of(id.chain));
        return false;
    }

    // A suite list with no suite usable with this key type makes every handshake fail.
    bool usable = false;
    for (int suite : suites) {
        if (suite == 0) break;
        const mbedtls_ssl_ciphersuite_t* info = mbedtls_ssl_ciphersuite_from_id(suite);
        const mbedtls_pk_type_t alg = mbedtls_ssl_get_ciphersuite_sig_pk_alg(info);
        if (alg != MBEDTLS_PK_NONE && mbedtls_pk_can_do(&id.key, alg)) usable = true;
    }
    if (!usable) {
        *error = fmt::format("tls.ciphers: none of the suites can be used with the {} key of {} (add e.g. {})",
                             key_kind(id.key), cert_file,
                             mbedtls_pk_can_do(&id.key, MBEDTLS_PK_RSA) ? "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"
                                                                        : "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256");
        return false;
    }

    if (mbedtls_x509_time_is_past(&id.chain.valid_to))
        warnings.push_back(fmt::format("tls.cert {}: the certificate expired on {}; clients that verify "
                                       "will refuse it",
                                       cert_file, date_of(id.chain.valid_to)));
    if (mbedtls_x509_time_is_future(&id.chain.valid_from))
        warnings.push_back(fmt::format("tls.cert {}: the certificate is not valid before {}", cert_file,
                                       date_of(id.chain.valid_from)));
    if (mbedtls_pk_can_do(&id.key, MBEDTLS_PK_RSA) && mbedtls_pk_get_bitlen(&id.key) < 2048)
        warnings.push_back(fmt::format("tls.key {}: an RSA key of {} bits; use 2048 bits or more", key_file,
                                       mbedtls_pk_get_bitlen(&id.key)));
    return true;
}

}  // namespace

TlsServerContext::TlsServerContext() : impl_(std::make_unique<Impl>()) {}
TlsServerContext::~TlsServerContext() = default;
const mbedtls_ssl_config* TlsServerContext::ssl_config() const { return &impl_->conf; }

std::shared_ptr<TlsServerContext> TlsServerContext::load(const std::string& cert_file, const std::string& key_file,
                                                         const std::string& ciphers, std::string* error) {
    return load(std::vector<std::string>{cert_file}, std::vector<std::string>{key_file}, ciphers, "", error);
}

std::shared_ptr<TlsServerContext> TlsServerContext::load(const std::vector<std::string>& cert_files,
                                                         const std::vector<std::string>& key_files,
                                                         const std::string& ciphers,
                                                         const std::string& ticket_key_file, std::string* error) {
    std::shared_ptr<TlsServerContext> ctx(new TlsServerContext());
    Impl& im = *ctx->impl_;
    if (cert_files.empty() || cert_files.size() != key_files.size()) {
        *error = fmt::format("tls.cert lists {} file(s) and tls.key {}: give one key per certificate, in the same "
                             "order",
                             cert_files.size(), key_files.size());
        return nullptr;
    }
    ctx->cert_file_ = cert_files.front();

    std::string why;
    im.suites = parse_tls_ciphers(ciphers, &why);
    if (im.suites.empty()) {
        *error = "tls.ciphers: " + why;
        return nullptr;
    }

    for (size_t i = 0; i < cert_files.size(); ++i) {
        auto id = std::make_unique<Identity>();
        if (!load_identity(*id, cert_files[i], key_files[i], im.suites, ctx->warnings_, error)) return nullptr;
        // mbedTLS picks the first certificate whose key fits the suite it chose: a second
        // one of the same type would never be sent.
        for (size_t j = 0; j < im.identities.size(); ++j) {
            if (mbedtls_pk_get_type(&im.identities[j]->key) == mbedtls_pk_get_type(&id->key)) {
                *error = fmt::format("tls.cert {} and {}: both are {} certificates; give one RSA and one ECDSA "
                                     "certificate (mbedTLS picks per client by key type)",
                                     cert_files[j], cert_files[i], key_kind(id->key));
                return nullptr;
            }
        }
        im.identities.push_back(std::move(id));
    }

    if (setup_common(&im.conf, &im.entropy, &im.drbg, MBEDTLS_SSL_IS_SERVER, im.suites, &why) != 0) {
        *error = "tls: " + why;
        return nullptr;
    }
    // One entry per pair: for each client mbedTLS takes the first certificate whose key
    // type the chosen suite signs with (and whose curve the client offers), so an
    // RSA-only client gets the RSA chain and the others the one of the suite preferred.
    for (size_t i = 0; i < im.identities.size(); ++i) {
        const int ret = mbedtls_ssl_conf_own_cert(&im.conf, &im.identities[i]->chain, &im.identities[i]->key);
        if (ret != 0) {
            *error = fmt::format("tls.cert {}: mbedTLS refused the certificate: {}", cert_files[i],
                                 mbedtls_error_text(ret));
            return nullptr;
        }
    }
    // Session tickets (RFC 5077) let a returning client resume without the public-key
    // work, and keep no per-client state on our side. One context serves every thread,
    // so its ticket keys are one set for the whole process. With tls.ticket_key_file the
    // keys come from the file, the same on every instance that reads it.
    if (!ticket_key_file.empty()) {
        im.ticket_keys = TlsTicketKeys::load(ticket_key_file, &im.drbg, error);
        if (!im.ticket_keys) return nullptr;
        mbedtls_ssl_conf_session_tickets_cb(&im.conf, &TlsTicketKeys::write, &TlsTicketKeys::parse,
                                            im.ticket_keys.get());
        return ctx;
    }
    // Otherwise mbedTLS's own: the key rotates every hour (Postfix's
    // smtpd_tls_session_cache_timeout); a ticket stays valid for up to two rotations.
    int ret = mbedtls_ssl_ticket_setup(&im.ticket, mbedtls_ctr_drbg_random, &im.drbg, MBEDTLS_CIPHER_AES_256_GCM, 3600);
    if (ret != 0) {
        *error = "tls: cannot set up session tickets: " + mbedtls_error_text(ret);
        return nullptr;
    }
    mbedtls_ssl_conf_session_tickets_cb(&im.conf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse, &im.ticket);
    return ctx;
}

// ---------------------------------------------------------------------------------------
// Client

struct TlsClientContext::Impl {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    mbedtls_ssl_config conf;
    std::vector<int> suites;

    Impl() {
        mbedtls_entropy_init(&entropy);
        mbedtls_ctr_drbg_init(&drbg);
        mbedtls_x509_crt_init(&ca);
        mbedtls_ssl_config_init(&conf);
    }
    ~Impl() {
        mbedtls_ssl_config_free(&conf);
        mbedtls_x509_crt_free(&ca);
        mbedtls_ctr_drbg_free(&drbg);
        mbedtls_entropy_free(&entropy);
    }
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;
};

TlsClientContext::TlsClientContext() : impl_(std::make_unique<Impl>()) {}
TlsClientContext::~TlsClientContext() = default;
const mbedtls_ssl_config* TlsClientContext::ssl_config() const { return &impl_->conf; }

std::shared_ptr<TlsClientContext> TlsClientContext::load(const std::string& ca_file, const std::string& ciphers,
                                                         std::string* error) {
    std::shared_ptr<TlsClientContext> ctx(new TlsClientContext());
    Impl& im = *ctx->impl_;
    std::string why;
    im.suites = parse_tls_ciphers(ciphers, &why);
    if (im.suites.empty()) {
        *error = "backend TLS ciphers: " + why;
        return nullptr;
    }
    if (!ca_file.empty() && !load_certs(&im.ca, "backend.tls_ca", ca_file, error)) return nullptr;
    if (setup_common(&im.conf, &im.entropy, &im.drbg, MBEDTLS_SSL_IS_CLIENT, im.suites, &why) != 0) {
        *error = "backend.tls: " + why;
        return nullptr;
    }
    if (ca_file.empty()) {
        // Postfix's "may": encrypted against passive eavesdroppers, unauthenticated.
        mbedtls_ssl_conf_authmode(&im.conf, MBEDTLS_SSL_VERIFY_NONE);
    } else {
        mbedtls_ssl_conf_authmode(&im.conf, MBEDTLS_SSL_VERIFY_REQUIRED);
        mbedtls_ssl_conf_ca_chain(&im.conf, &im.ca, nullptr);
        ctx->verifies_ = true;
    }
    return ctx;
}

}  // namespace smtpscreen
