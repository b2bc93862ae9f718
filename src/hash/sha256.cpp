#include "hash/sha256.h"

#include <openssl/evp.h>

#include <utility>

namespace qdedup::hash {

void Sha256::Free::operator()(evp_md_st* md) const { EVP_MD_free(md); }
void Sha256::Free::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

Sha256::Sha256(std::unique_ptr<evp_md_st, Free> md, std::unique_ptr<evp_md_ctx_st, Free> ctx)
    : md_(std::move(md)), ctx_(std::move(ctx)) {
  start();
}

Result<Sha256> Sha256::create() {
  std::unique_ptr<evp_md_st, Free> md(EVP_MD_fetch(nullptr, "SHA256", nullptr));
  std::unique_ptr<evp_md_ctx_st, Free> ctx(EVP_MD_CTX_new());
  if (md == nullptr || ctx == nullptr) return io_error("out of memory");
  return Sha256(std::move(md), std::move(ctx));
}

void Sha256::start() { EVP_DigestInit_ex2(ctx_.get(), md_.get(), nullptr); }

void Sha256::update(std::span<const uint8_t> data) {
  EVP_DigestUpdate(ctx_.get(), data.data(), data.size());
}

void Sha256::final(uint8_t* out) {
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_.get(), out, &len);
  start();
}

Sha256Digest Sha256::final() {
  Sha256Digest out{};
  final(out.data());
  return out;
}

Sha256Digest sha256(std::span<const uint8_t> data) {
  Sha256Digest out{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

}  // namespace qdedup::hash
