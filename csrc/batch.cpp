#include "batch.h"

#include <stdexcept>
#include <string>

namespace drift {

// One sequence id per token: every token here belongs to a single sequence.
Batch::Batch(int capacity) : batch_(llama_batch_init(capacity, 0, 1)), capacity_(capacity) {}

Batch::~Batch() {
    llama_batch_free(batch_);
}

int Batch::add(llama_token token, llama_pos pos, llama_seq_id seq, bool logits) {
    const int i = batch_.n_tokens++;
    batch_.token[i] = token;
    batch_.pos[i] = pos;
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = seq;
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
