#include "batch.h"

#include <stdexcept>
#include <string>

namespace drift {

Batch::Batch(int capacity, int n_seq_max) : batch_(llama_batch_init(capacity, 0, n_seq_max)), capacity_(capacity) {}

Batch::~Batch() {
    llama_batch_free(batch_);
}

int Batch::add(llama_token token, llama_pos pos, llama_seq_id seq, bool logits) {
    return add(token, pos, std::vector<llama_seq_id>{seq}, logits);
}

int Batch::add(llama_token token, llama_pos pos, const std::vector<llama_seq_id> & seqs, bool logits) {
    const int i = batch_.n_tokens++;
    batch_.token[i] = token;
    batch_.pos[i] = pos;
    batch_.n_seq_id[i] = (int32_t) seqs.size();
    for (size_t s = 0; s < seqs.size(); ++s) {
        batch_.seq_id[i][s] = seqs[s];
    }
    batch_.logits[i] = logits;
    return i;
}

void Batch::decode(llama_context * ctx) const {
    const int32_t rc = llama_decode(ctx, batch_);
    if (rc == 1) {
        throw std::runtime_error("llama_decode: no room left in the KV cache");
    }
    if (rc != 0) {
        throw std::runtime_error("llama_decode failed with code " + std::to_string(rc));
    }
}

}  // namespace drift
