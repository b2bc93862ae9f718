// Skein-512 (Skein 1.3) against the published known answers and against an
// independent implementation (Botan, when installed).
#include "hash/skein.h"

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "hash/hash.h"
#include "support/scratch_dir.h"

namespace qdedup::hash {
namespace {

std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

std::string to_hex(const uint8_t* p, size_t n) {
  static const char kDigits[] = "0123456789ABCDEF";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

std::string skein_hex(size_t output_bytes, const std::vector<uint8_t>& message) {
  uint8_t out[Skein512::kMaxOutputBytes];
  Skein512(output_bytes).hash(message, out);
  return to_hex(out, output_bytes);
}

// 0xFF, 0xFE, ... : the messages of the Skein 1.3 paper, Appendix C.
std::vector<uint8_t> descending(size_t n) {
  std::vector<uint8_t> m(n);
  for (size_t i = 0; i < n; ++i) m[i] = static_cast<uint8_t>(0xFF - i);
  return m;
}

struct Kat {
  size_t length_bytes;
  const char* message_hex;
  const char* digest_hex;
};

// Skein-512-256 known answers from ShortMsgKAT_256.txt of the Skein 1.3 NIST
// submission (its 256-bit variant is Skein-512-256), entries Len = 0, 8, 256,
// 512, 520, 1024 and 2040 bits, as reproduced in Botan's
// src/tests/data/hash/skein.vec, section [Skein-512(256)]. The messages are the
// SHA-3 competition's common ShortMsgKAT messages.
const Kat kShortMsgKat256[] = {
    {0,
     "",
     "39CCC4554A8B31853B9DE7A1FE638A24CCE6B35A55F2431009E18780335D2621"},
    {1,
     "CC",
     "A018268ED814E0AD0F2D0304E8FE3F4118FCEFC07454D07123CC2C3E40E06A4F"},
    {32,
     "9F2FCC7C90DE090D6B87CD7E9718C1EA6CB21118FC2D5DE9F97E5DB6AC1E9C10",
     "9EC82726E31BAD61A93C9A34EA6634E6E0A2023B04A47EB929A92B1F692A5AB7"},
    {64,
     "E926AE8B0AF6E53176DBFFCC2A6B88C6BD765F939D3D178A9BDE9EF3AA131C61"
     "E31C1E42CDFAF4B4DCDE579A37E150EFBEF5555B4C1CB40439D835A724E2FAE7",
     "08375C3267E2196834E65D2ABF25EA2A33E74ABCCA281E4A4D816BD7C8B5ADBD"},
    {65,
     "16E8B3D8F988E9BB04DE9C96F2627811C973CE4A5296B4772CA3EEFEB80A652B"
     "DF21F50DF79F32DB23F9F73D393B2D57D9A0297F7A2F2E79CFDA39FA393DF1AC"
     "00",
     "3CCDCBB0C34CE4241173CB0E85FFA50955A8D597381AAC3E11F362CB23EAEF7B"},
    {128,
     "2B6DB7CED8665EBE9DEB080295218426BDAA7C6DA9ADD2088932CDFFBAA1C141"
     "29BCCDD70F369EFB149285858D2B1D155D14DE2FDB680A8B027284055182A0CA"
     "E275234CC9C92863C1B4AB66F304CF0621CD54565F5BFF461D3B461BD40DF281"
     "98E3732501B4860EADD503D26D6E69338F4E0456E9E9BAF3D827AE685FB1D817",
     "646F10BA11E7B11292E7F60551316C36625382F200959F3569DE356F64DDEA55"},
    {255,
     "3A3A819C48EFDE2AD914FBF00E18AB6BC4F14513AB27D0C178A188B61431E7F5"
     "623CB66B23346775D386B50E982C493ADBBFC54B9A3CD383382336A1A0B2150A"
     "15358F336D03AE18F666C7573D55C4FD181C29E6CCFDE63EA35F0ADF5885CFC0"
     "A3D84A2B2E4DD24496DB789E663170CEF74798AA1BBCD4574EA0BBA40489D764"
     "B2F83AADC66B148B4A0CD95246C127D5871C4F11418690A5DDF01246A0C80A43"
     "C70088B6183639DCFDA4125BD113A8F49EE23ED306FAAC576C3FB0C1E256671D"
     "817FC2534A52F5B439F72E424DE376F4C565CCA82307DD9EF76DA5B7C4EB7E08"
     "5172E328807C02D011FFBF33785378D79DC266F6A5BE6BB0E4A92ECEEBAEB1",
     "89D35349D86B5FABBCFF385931532888F7DAB44B35E4522B196DBCC34FF5F912"},
};

}  // namespace

TEST_CASE("Skein-512-256 matches the Skein 1.3 submission's ShortMsgKAT_256",
          "[dedup][skein]") {
  for (const Kat& kat : kShortMsgKat256) {
    const std::vector<uint8_t> message = from_hex(kat.message_hex);
    REQUIRE(message.size() == kat.length_bytes);
    INFO("message of " << kat.length_bytes << " bytes");
    CHECK(skein_hex(32, message) == kat.digest_hex);
  }
}

TEST_CASE("Skein-512-512 matches the Skein 1.3 paper's Appendix C", "[dedup][skein]") {
  // Appendix C.2 (Skein-512-512), messages 0xFF; 0xFF..0xC0; 0xFF..0x80.
  CHECK(skein_hex(64, descending(1)) ==
        "71B7BCE6FE6452227B9CED6014249E5BF9A9754C3AD618CCC4E0AAE16B316CC8"
        "CA698D864307ED3E80B6EF1570812AC5272DC409B5A012DF2A579102F340617A");
  CHECK(skein_hex(64, descending(64)) ==
        "45863BA3BE0C4DFC27E75D358496F4AC9A736A505D9313B42B2F5EADA79FC17F"
        "63861E947AFB1D056AA199575AD3F8C9A3CC1780B5E5FA4CAE050E989876625B");
  CHECK(skein_hex(64, descending(128)) ==
        "91CCA510C263C4DDD010530A33073309628631F308747E1BCBAA90E451CAB92E"
        "5188087AF4188773A332303E6667A7A210856F742139000071F48E8BA2A5ADB7");
}

TEST_CASE("Skein-512-512 matches the submission's LongMsgKAT_512 on a 1327-byte message",
          "[dedup][skein]") {
  // LongMsgKAT_512.txt of the Skein 1.3 NIST submission, entry Len = 10616
  // bits, as reproduced in Botan's src/tests/data/hash/skein.vec, section
  // [Skein-512(512)]. 21 message blocks, the last one partial.
  const std::vector<uint8_t> message = from_hex(
    "4FA3DF1DEA75AD4B9C379206A95FED930000482E5B683FD2B17DC8E7D5C4BC1B73186CCC"
    "13C9FF2DD09FC1D4F68034D120E84CA73A00B71A3B46D1EFC6FF88CF2EDA65810B098CC5"
    "E651D9CF064E87076D5A871849F3B405D3D58EF5B1F10520A9FB4FC84A81A87B13DBFBF9"
    "D8674943E28C257E46D8AD7BE1785F1DC7C9B1BD574AD1DDA48F0255C853D2490BD3D63D"
    "A22A8369CFD02594999A2EF443308FB8298266A11EFA177102C75DC674E89FC9DCC1A0D3"
    "C863BC26141102175D2678EB6E13D90BBD9A5EB89AE8C0CB47D7F340D3D32042A2762BC9"
    "BF2B40EB40E87FB42610FE7E357051F01494704FBFF73321B47301A0799B7EE3FE5E6220"
    "0F397A61ED4509A62F7106ED0EFB0ABD6AE9E4A1FE9B02C092DCDC75015CF602F3B9A898"
    "8B609E6C0D1C5C3E219FF57875C2EF01615F89447EA602DFC94EEC17A398C014BD346691"
    "FE209A002771DC8164422CD166AFB457A8B3071282178A3EBD201D9B07B27E711E7EE7D3"
    "3AA5210ED4E4E92486775D14A6CED092E34A7AC82670939948FEC149F9C018FCAAD3FC59"
    "7D315713F44FC5E1725F448ECAED40E8D841BD02F1E81C019B08F99412E360C0BD378391"
    "C67D964B47F50C26F0A483ED664023616B0FC9AFE43620DBE9CCFE070EF295C049EAC754"
    "C2123130C6B2C0232F6403AA7F0DC35A5999BF95D34AD612234C6289277ADB60E4F72EC2"
    "DF570F05395B3BE8A0A3C78B732821AA08927C524E15D65F66A3DB8C1C96FB70BC0686AA"
    "C310051F469FC5EF880C0F66947C1C328F97684EA24CBE63BAED8D114F40507C2901034E"
    "6AB3893F366D53F1CFCA309309218CABCECA4722FA9CCBC7249B87C12FF8397F40487EB0"
    "0082E7F551D27E301C3BC7B5389F7042534BF7E692DFEA4DA24F7C34B8D2FF145F54B517"
    "FC97134EC5AC2CB925C508D7A6BD01FE7B764648274972BF08560D30802E0EB7EDCC57AF"
    "4797BBF92E8688268606B0F1BC901FCC22136281665EC16393FA9601C4FBDB18CD1D1EE3"
    "82BC07973903E91FFA87399D1141D49F4F0C064ACF3AC9897891DF10BCA0116F2C3FEF18"
    "0FE6A8E937C478F2EF293AE9186DCB1F76B6E48101DF64E57EA7C64C5C0025E221C8F5CB"
    "A5CC92D9CEC628140996B26D17F439B780F59A999301122F82D0495F8AB5AE1EA5790F45"
    "E992DFE00D5F82A7FF1354AEFDCEFC0D2D1731D22FA2B75AFD4FDA25AB194055FA962838"
    "1055247C8C7587D22E73C60136C4282452D47AE03AA035FEBC26FCCD42A1CB79CF866DB6"
    "418A49FD8261E877DDBB839CC39514DDB87A8A40D795532626FEA4A4C35D13E028F9ED1B"
    "C09B06BE999B8DDD2258AA0596BCBBF72AF67E10BEDD58D599B8D577A583D676BF5561F8"
    "0CE5E9528729A92DF578FE75DBC70474B75747A8D55DE70E57BDD62D4344DC2115ED4DD6"
    "2F1FC98BFA1E7421FC0700025C46D0ED1BEF35C3B778563211B9FA9E8BA4BBCBF01C2FB6"
    "26AB7EF325CE9F468DF2CACDB178D36557CD85D542C067C289E926C1EA2F20ABD329E984"
    "168BB6DEF1DDCCF214DCB6A53AFD462F0E7E7A19E8C88F049244125A6D7DD41E58BC9B2F"
    "F7FA2478DF76AF73090CB1AB59E388BA20E2C297C967737A1AF61793B68ECD7439444C48"
    "E28E2D09C48FADA5E0D1D15E5B340A52F8B3B854CCA479F0A598445E14F53B3BA3689105"
    "0C79673DF3E2B5825C955A29E5C9A22F3991D0AA785718CFEA1D2385F8E47E4A75ACBC79"
    "88D0558D541D71C4E6C5F1CB15B60CEA0C34A67BBCE105D7A896025E0254DE7D7AF724C9"
    "027D44B8642192A08AB8E1EF3046DDA6014DF7F4C9E63C635E48AB2E70B640D480998EC9"
    "357E665F99D76FE5529EF23C1BDFE017C3A66CD4EB2DDB42EF85EA0CD65534");
  REQUIRE(message.size() == 1327);
  CHECK(skein_hex(64, message) ==
    "8C0B44D668773C632A8B8316710F4B8E8948AB0DE82B9ADAAFF0A9FA901FE653"
    "2FC4E6741539C83966D42D646B1FA50BB7CF6F7545BE39CB561562FA1A474B6B");
}

TEST_CASE("Skein-512-256 of the Appendix C messages matches Botan's output", "[dedup][skein]") {
  // Not official known answers: computed with Botan 2.19.3 (Debian bookworm),
  // ../shared/DEDUP-NOTES.md section 6.2.
  CHECK(skein_hex(32, descending(1)) ==
        "3D95D5DC43B5A9BFFA5F7F51187A5822113D1FF156704FBA6607325E684B8FFA");
  CHECK(skein_hex(32, descending(64)) ==
        "11E34824B12092581DE849940F02325B15CA9327408482825DF220AC44AD75F1");
}

TEST_CASE("the skein Hasher is Skein-512-256", "[dedup][skein]") {
  auto hasher = make_hasher(HashAlgorithm::kSkein);
  REQUIRE(hasher != nullptr);
  REQUIRE(hasher->digest_size() == 32);
  const std::vector<uint8_t> message = from_hex(kShortMsgKat256[2].message_hex);
  uint8_t out[32];
  hasher->hash(message, out);
  CHECK(to_hex(out, 32) == kShortMsgKat256[2].digest_hex);
}

TEST_CASE("Skein-512-256 agrees with Botan on random messages", "[dedup][skein][botan]") {
  if (std::system("botan version >/dev/null 2>&1") != 0) {
    WARN("botan is not installed (Debian package botan): Skein cross-check skipped");
    return;
  }
  image_builder::ScratchDir dir;
  REQUIRE(!dir.path().empty());

  // About 200 random lengths 0..5000 (every block-boundary case among them),
  // then a few large messages.
  std::mt19937_64 rng(20240605);
  std::vector<size_t> lengths = {0, 1, 63, 64, 65, 127, 128, 129};
  while (lengths.size() < 200) lengths.push_back(rng() % 5001);
  for (size_t n : {size_t{1} << 20, (size_t{4} << 20) + 17, (size_t{16} << 20) - 1}) {
    lengths.push_back(n);
  }

  std::map<std::string, std::string> expected;  // file name -> our digest
  std::string command = "cd '" + dir.path() + "' && botan hash --algo='Skein-512(256)'";
  for (size_t i = 0; i < lengths.size(); ++i) {
    std::vector<uint8_t> message(lengths[i]);
    for (uint8_t& b : message) b = static_cast<uint8_t>(rng());
    const std::string name = "m" + std::to_string(i);
    std::ofstream(dir.file(name), std::ios::binary)
        .write(reinterpret_cast<const char*>(message.data()),
               static_cast<std::streamsize>(message.size()));
    expected[name] = skein_hex(32, message);
    command += " " + name;
  }

  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::map<std::string, std::string> botan;  // file name -> Botan's digest
  char digest[129];
  char name[64];
  while (std::fscanf(pipe, "%128s %63s", digest, name) == 2) botan[name] = digest;
  REQUIRE(::pclose(pipe) == 0);

  REQUIRE(botan.size() == expected.size());
  for (size_t i = 0; i < lengths.size(); ++i) {
    const std::string n = "m" + std::to_string(i);
    INFO("message of " << lengths[i] << " bytes");
    CHECK(botan[n] == expected[n]);
  }
}

}  // namespace qdedup::hash
