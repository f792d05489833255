// An owned llama_batch with the add/clear helpers of llama.cpp's common library.
#pragma once

#include "llama.h"

#include <vector>

namespace drift {

class Batch {
public:
    Batch(int capacity, int n_seq_max);
    ~Batch();
    Batch(const Batch &) = delete;
    Batch & operator=(const Batch &) = delete;

    void clear() { batch_.n_tokens = 0; }
    int size() const { return batch_.n_tokens; }
    int capacity() const { return capacity_; }
    bool full() const { return batch_.n_tokens >= capacity_; }

    // Returns the token's index in the batch, which is where its logits are read.
    int add(llama_token token, llama_pos pos, llama_seq_id seq, bool logits);
    int add(llama_token token, llama_pos pos, const std::vector<llama_seq_id> & seqs, bool logits);

    // Runs llama_decode and throws std::runtime_error when it fails.
    void decode(llama_context * ctx) const;

private:
    llama_batch batch_;
    int capacity_;
};

}  // namespace drift
