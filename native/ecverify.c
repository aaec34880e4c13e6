/*
 * ecverify: ECDSA signature verification for public keys seen once (agents'
 * CSRs), through the OpenSSL that Node itself links (its headers ship with
 * Node; its symbols are exported by the node binary). Plain Node-API, no C++.
 *
 * Why: Node's crypto.verify with a fresh key pays OpenSSL 3's key import and
 * provider export (~2x the verification itself) on every CSR. Here each
 * thread keeps one EC_KEY per curve and only swaps its public point, so a
 * CSR check costs one curve-point decode (with its on-curve check) and one
 * ECDSA verification. Nothing here signs or holds a secret.
 *
 *   verify(curve: 0 (P-256) | 1 (P-384), point: Uint8Array (uncompressed),
 *          hash: 0 (SHA-256) | 1 (SHA-384) | 2 (SHA-512),
 *          data: Uint8Array, signature: Uint8Array (DER Ecdsa-Sig-Value))
 *     -> 1 valid, 0 invalid signature (also: malformed or non-canonical DER),
 *        -1 the point is not a valid public key of that curve
 *
 * Throws TypeError for arguments of the wrong kind.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#include "napi_bytes.h"
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>
#include <openssl/crypto.h>

#define NCURVES 2

typedef struct {
  EC_KEY *key[NCURVES];
  EC_POINT *point[NCURVES];
} state_t;

static const int CURVE_NID[NCURVES] = {NID_X9_62_prime256v1, NID_secp384r1};
static const size_t POINT_LEN[NCURVES] = {65, 97};

static void free_state(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  state_t *s = (state_t *)data;
  if (s == NULL) return;
  for (int i = 0; i < NCURVES; i++) {
    if (s->point[i] != NULL) EC_POINT_free(s->point[i]);
    if (s->key[i] != NULL) EC_KEY_free(s->key[i]);
  }
  free(s);
}

static napi_value fail(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

static int get_small(napi_env env, napi_value v, int32_t max, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) return 0;
  return *out >= 0 && *out <= max;
}

static napi_value make_int(napi_env env, int32_t v) {
  napi_value r;
  if (napi_create_int32(env, v, &r) != napi_ok) return NULL;
  return r;
}

static napi_value verify(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5) return fail(env, "ecverify: expected 5 arguments");
  int32_t curve, hash;
  const uint8_t *point, *data, *sig;
  size_t point_len, data_len, sig_len;
  if (!get_small(env, argv[0], NCURVES - 1, &curve)) return fail(env, "ecverify: curve must be 0 or 1");
  if (!get_bytes(env, argv[1], &point, &point_len)) return fail(env, "ecverify: point must be a Uint8Array");
  if (!get_small(env, argv[2], 2, &hash)) return fail(env, "ecverify: hash must be 0, 1 or 2");
  if (!get_bytes(env, argv[3], &data, &data_len)) return fail(env, "ecverify: data must be a Uint8Array");
  if (!get_bytes(env, argv[4], &sig, &sig_len)) return fail(env, "ecverify: signature must be a Uint8Array");

  state_t *s;
  if (napi_get_instance_data(env, (void **)&s) != napi_ok || s == NULL) return fail(env, "ecverify: not initialised");

  /* Uncompressed points only (what CSRs carry); the decode checks the point is on the curve. */
  if (point_len != POINT_LEN[curve] || point[0] != 0x04) return make_int(env, -1);
  EC_KEY *key = s->key[curve];
  const EC_GROUP *group = EC_KEY_get0_group(key);
  if (EC_POINT_oct2point(group, s->point[curve], point, point_len, NULL) != 1) return make_int(env, -1);
  if (EC_POINT_is_at_infinity(group, s->point[curve]) || EC_POINT_is_on_curve(group, s->point[curve], NULL) != 1) return make_int(env, -1);
  if (EC_KEY_set_public_key(key, s->point[curve]) != 1) return make_int(env, -1);

  uint8_t md[SHA512_DIGEST_LENGTH];
  size_t md_len;
  switch (hash) {
    case 0: SHA256(data, data_len, md); md_len = SHA256_DIGEST_LENGTH; break;
    case 1: SHA384(data, data_len, md); md_len = SHA384_DIGEST_LENGTH; break;
    default: SHA512(data, data_len, md); md_len = SHA512_DIGEST_LENGTH; break;
  }

  /* Strict DER, as OpenSSL's ECDSA_verify: the signature must re-encode to the same bytes. */
  const unsigned char *p = sig;
  ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sig_len);
  if (es == NULL) return make_int(env, 0);
  int ok = 0;
  unsigned char *der = NULL;
  int der_len = i2d_ECDSA_SIG(es, &der);
  if ((size_t)(p - sig) == sig_len && der_len == (int)sig_len && memcmp(der, sig, sig_len) == 0) {
    ok = ECDSA_do_verify(md, (int)md_len, es, key) == 1;
  }
  OPENSSL_free(der);
  ECDSA_SIG_free(es);
  return make_int(env, ok ? 1 : 0);
}

NAPI_MODULE_INIT() {
  state_t *s = (state_t *)calloc(1, sizeof(state_t));
  if (s == NULL) {
    napi_throw_error(env, NULL, "ecverify: out of memory");
    return NULL;
  }
  for (int i = 0; i < NCURVES; i++) {
    s->key[i] = EC_KEY_new_by_curve_name(CURVE_NID[i]);
    if (s->key[i] == NULL || (s->point[i] = EC_POINT_new(EC_KEY_get0_group(s->key[i]))) == NULL) {
      free_state(env, s, NULL);
      napi_throw_error(env, NULL, "ecverify: OpenSSL EC setup failed");
      return NULL;
    }
  }
  if (napi_set_instance_data(env, s, free_state, NULL) != napi_ok) {
    free_state(env, s, NULL);
    napi_throw_error(env, NULL, "ecverify: Node-API call failed");
    return NULL;
  }
  napi_value fn;
  if (napi_create_function(env, "verify", NAPI_AUTO_LENGTH, verify, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "verify", fn) != napi_ok) return NULL;
  return exports;
}
