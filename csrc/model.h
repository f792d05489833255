// A GGUF model loaded through llama.cpp, with the vocabulary helpers the
// scorer and the decoding engine share.
#pragma once

#include "llama.h"

#include <memory>
#include <string>
#include <vector>

namespace drift {

// llama.cpp logs thousands of lines per decode; it is silent unless enabled.
void set_logging(bool enabled);

// Whether weights may go into the CPU backend's extra buffer types (repacked layouts). Not where
// it offers AMX: this llama.cpp's AMX matmul crashes on some machines (llama.cpp issue #20824).
bool extra_buffers_safe();

struct ModelParams {
    int n_gpu_layers = 0;  // layers to offload to an accelerator, if llama.cpp was built with one
};

struct ContextParams {
    int n_ctx = 2048;      // KV cells in all
    int n_batch = 512;     // most tokens one llama_decode takes
    int n_seq_max = 1;
    int n_threads = 0;     // 0: llama.cpp's default
    bool kv_unified = false;
};

class Model {
public:
    // Throws std::runtime_error with a readable message for a missing file,
    // a file that is not GGUF, a truncated file or an unknown architecture.
    Model(const std::string & path, const ModelParams & params);
    ~Model();
    Model(const Model &) = delete;
    Model & operator=(const Model &) = delete;

    const std::string & path() const { return path_; }
    const llama_model * get() const { return model_; }
    const llama_vocab * vocab() const { return vocab_; }
    int n_vocab() const { return llama_vocab_n_tokens(vocab_); }

    std::string description() const;
    std::string meta(const std::string & key) const;  // "" when absent
    std::string chat_template() const;                // "" when the GGUF has none

    // parse_special: control tokens written in the text (e.g. "<|im_start|>") become tokens.
    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string piece(llama_token token) const;
    std::string detokenize(const std::vector<llama_token> & tokens) const;
    bool is_eog(llama_token token) const { return llama_vocab_is_eog(vocab_, token); }

    llama_context * new_context(const ContextParams & params) const;

private:
    std::string path_;
    llama_model * model_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
};

struct ContextDeleter {
    void operator()(llama_context * ctx) const { llama_free(ctx); }
};
using ContextPtr = std::unique_ptr<llama_context, ContextDeleter>;

// The draft/target check of llama.cpp's speculative example: same BOS handling,
// the same EOS, sizes within a small tolerance and the same text for every shared
// token. Throws std::runtime_error with one line naming both models and what differs.
void check_vocab_compatible(const Model & llm, const Model & slm);

}  // namespace drift
