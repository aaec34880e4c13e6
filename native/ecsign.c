/*
 * ecsign: ECDSA signing with a software CA key (memory and disk key
 * managers) through the OpenSSL that Node itself links (its headers ship with
 * Node; its symbols are exported by the node binary). Plain Node-API, no C++.
 *
 * Why: node:crypto's sign() sets up an OpenSSL 3 signing context (algorithm
 * fetch, key export to the provider) on every call: about a fifth of a P-256
 * signature. The CSR workers sign thousands of leaves a second with one key;
 * here the key is imported once per thread into an EC_KEY and each signature
 * is one digest and one ECDSA_do_sign (random nonce, as OpenSSL's own).
 *
 * The key never comes back out: there is no export, and the EC_KEY is freed
 * (its scalar cleared by OpenSSL) when the handle is garbage collected.
 * Keys in an HSM never reach this code.
 *
 *   importKey(pkcs8: Uint8Array) -> handle
 *     an EC private key on P-256 or P-384 (PKCS#8 DER); throws TypeError for
 *     anything else. The caller wipes its copy of the bytes.
 *   sign(handle, hash: 0 (SHA-256) | 1 (SHA-384) | 2 (SHA-512), data: Uint8Array)
 *     -> Buffer, the signature as r || s (IEEE P1363), each the curve's size
 *
 * Throws TypeError for arguments of the wrong kind, Error when OpenSSL fails.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#include "napi_bytes.h"
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

/* A type tag, so that sign() refuses any other addon's external. */
static const napi_type_tag KEY_TAG = {0x7761727261e17ec5ULL, 0x1f3a9c02b4d6e8f1ULL};

static napi_value fail_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

static napi_value fail(napi_env env, const char *msg) {
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static void free_key(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  EC_KEY_free((EC_KEY *)data);
}

static napi_value import_key(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1) return fail_type(env, "ecsign: expected 1 argument");
  const uint8_t *der;
  size_t der_len;
  if (!get_bytes(env, argv[0], &der, &der_len) || der_len == 0 || der_len > 4096) return fail_type(env, "ecsign: key must be PKCS#8 DER in a Uint8Array");

  const unsigned char *p = der;
  PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)der_len);
  if (p8 == NULL || (size_t)(p - der) != der_len) {
    PKCS8_PRIV_KEY_INFO_free(p8);
    return fail_type(env, "ecsign: key is not PKCS#8 DER");
  }
  EVP_PKEY *pkey = EVP_PKCS82PKEY(p8);
  PKCS8_PRIV_KEY_INFO_free(p8);
  if (pkey == NULL) return fail_type(env, "ecsign: key is not PKCS#8 DER");
  EC_KEY *key = EVP_PKEY_get1_EC_KEY(pkey);
  EVP_PKEY_free(pkey);
  if (key == NULL) return fail_type(env, "ecsign: not an EC key");
  int nid = EC_GROUP_get_curve_name(EC_KEY_get0_group(key));
  if ((nid != NID_X9_62_prime256v1 && nid != NID_secp384r1) || EC_KEY_get0_private_key(key) == NULL || EC_KEY_check_key(key) != 1) {
    EC_KEY_free(key);
    return fail_type(env, "ecsign: not a P-256 or P-384 private key");
  }
  napi_value handle;
  if (napi_create_external(env, key, free_key, NULL, &handle) != napi_ok) {
    EC_KEY_free(key);
    return fail(env, "ecsign: Node-API call failed");
  }
  if (napi_type_tag_object(env, handle, &KEY_TAG) != napi_ok) return fail(env, "ecsign: Node-API call failed");
  return handle;
}

static napi_value sign(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3) return fail_type(env, "ecsign: expected 3 arguments");
  bool tagged = false;
  void *ptr = NULL;
  if (napi_check_object_type_tag(env, argv[0], &KEY_TAG, &tagged) != napi_ok || !tagged || napi_get_value_external(env, argv[0], &ptr) != napi_ok || ptr == NULL) {
    return fail_type(env, "ecsign: handle is not a key from importKey");
  }
  EC_KEY *key = (EC_KEY *)ptr;
  int32_t hash;
  if (napi_get_value_int32(env, argv[1], &hash) != napi_ok || hash < 0 || hash > 2) return fail_type(env, "ecsign: hash must be 0, 1 or 2");
  const uint8_t *data;
  size_t data_len;
  if (!get_bytes(env, argv[2], &data, &data_len)) return fail_type(env, "ecsign: data must be a Uint8Array");

  uint8_t md[SHA512_DIGEST_LENGTH];
  int md_len;
  switch (hash) {
    case 0: SHA256(data, data_len, md); md_len = SHA256_DIGEST_LENGTH; break;
    case 1: SHA384(data, data_len, md); md_len = SHA384_DIGEST_LENGTH; break;
    default: SHA512(data, data_len, md); md_len = SHA512_DIGEST_LENGTH; break;
  }
  ECDSA_SIG *sig = ECDSA_do_sign(md, md_len, key);
  if (sig == NULL) return fail(env, "ecsign: signing failed");
  const BIGNUM *r, *s;
  ECDSA_SIG_get0(sig, &r, &s);
  int flen = (EC_GROUP_get_degree(EC_KEY_get0_group(key)) + 7) / 8;
  uint8_t out[2 * 66];
  int ok = BN_bn2binpad(r, out, flen) == flen && BN_bn2binpad(s, out + flen, flen) == flen;
  ECDSA_SIG_free(sig);
  if (!ok) return fail(env, "ecsign: signing failed");
  napi_value result;
  void *copy;
  if (napi_create_buffer_copy(env, (size_t)(2 * flen), out, &copy, &result) != napi_ok) return fail(env, "ecsign: Node-API call failed");
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "importKey", NAPI_AUTO_LENGTH, import_key, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "importKey", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "sign", NAPI_AUTO_LENGTH, sign, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "sign", fn) != napi_ok) return NULL;
  return exports;
}
