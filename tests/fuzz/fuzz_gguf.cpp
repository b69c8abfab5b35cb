// libFuzzer target for the GGUF reader and the model's binding: any input must
// either parse into a consistent File (and then read into Hparams and bind
// through the tensor table, or be refused) or throw ember::Error - never
// crash, hang, leak, read out of bounds or allocate without bound (run with
// ASan + UBSan).
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "ember/ember.hpp"
#include "model/hparams.hpp"
#include "model/tensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const auto f = ember::gguf::File::parse(data, size, "fuzz");
        // touch everything the reader handed out
        uint64_t sink = 0;
        for (const auto& kv : f.metadata()) {
            const auto& v = kv.value;
            sink += v.size() + kv.key.size();
            if (v.is_array() && v.array_type() == ember::gguf::ValueType::String)
                for (auto s : v.strings()) sink += s.size() ? static_cast<uint8_t>(s[0]) : 0;
            if (v.type() == ember::gguf::ValueType::String) sink += v.get<std::string_view>().size();
        }
        std::vector<float> row;
        for (const auto& t : f.tensors()) {
            if (t.file_offset + t.n_bytes > size) std::abort();  // the reader promised this
            if (t.n_bytes) sink += t.data[0] + t.data[t.n_bytes - 1];
            const uint64_t n = static_cast<uint64_t>(t.shape[0]);
            if (n == 0 || n > (1u << 16) || t.n_elements == 0) continue;
            row.resize(n);
            ember::dequantize_row(t.type, t.data, row.data(), static_cast<int64_t>(n));
        }
        if (sink == 0xFFFFFFFFFFFFull) std::abort();  // keep the reads
        // what Model::load does with the file after the tokenizer: every architecture's
        // hyperparameters and tensor rows, shapes checked against them
        const ember::Hparams hp = ember::hparams_from_gguf(f);
        ember::Weights w;
        std::vector<std::vector<float>> owned;
        ember::bind_tensors(f, hp, w, owned);
    } catch (const ember::Error&) {
    }
    return 0;
}
