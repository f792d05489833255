// An owned llama_batch with the add/clear helpers of llama.cpp's common library.
#pragma once

#include "llama.h"

namespace drift {

class Batch {
public:
    explicit Batch(int capacity);
    ~Batch();
    Batch(const Batch &) = delete;
    Batch & operator=(const Batch &) = delete;

    void clear() { batch_.n_tokens = 0; }
    int size() const { return batch_.n_tokens; }
    bool full() const { return batch_.n_tokens >= capacity_; }

    // Returns the token's index in the batch, which is where its logits are read.
    int add(llama_token token, llama_pos pos, llama_seq_id seq, bool logits);

    // Runs llama_decode and throws std::runtime_error when it fails.
    void decode(llama_context * ctx) const;

private:
    llama_batch batch_;
    int capacity_;
};

}  // namespace drift
