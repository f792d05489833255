#include "model.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace drift {

static bool g_logging = false;

static void log_callback(ggml_log_level /*level*/, const char * text, void * /*user*/) {
    if (g_logging) {
        fputs(text, stderr);
    }
}

void set_logging(bool enabled) {
    g_logging = enabled;
    llama_log_set(log_callback, nullptr);
}

static void ensure_backend() {
    static bool done = false;
    if (!done) {
        llama_backend_init();
        done = true;
    }
}

// llama.cpp reports most load failures only to its log, so the common cases
// are diagnosed here first, where the message can name the problem.
static void check_gguf_file(const std::string & path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        throw std::runtime_error(path + ": no such model file");
    }
    char magic[4] = {0, 0, 0, 0};
    file.read(magic, 4);
    if (file.gcount() < 4 || std::memcmp(magic, "GGUF", 4) != 0) {
        throw std::runtime_error(path + ": not a GGUF file");
    }
}

bool extra_buffers_safe() {
    ensure_backend();
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu == nullptr) {
        return true;
    }
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(
        ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts");
    for (ggml_backend_buffer_type_t * buft = get_extra ? get_extra(cpu) : nullptr; buft && *buft; ++buft) {
        if (std::strcmp(ggml_backend_buft_name(*buft), "AMX") == 0) {
            return false;
        }
    }
    return true;
}

Model::Model(const std::string & path, const ModelParams & params) : path_(path) {
    ensure_backend();
    check_gguf_file(path);
    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = params.n_gpu_layers;
    mparams.use_extra_bufts = extra_buffers_safe();
    model_ = llama_model_load_from_file(path.c_str(), mparams);
    if (model_ == nullptr) {
        throw std::runtime_error(path + ": llama.cpp could not load this model "
                                 "(truncated file or unsupported architecture; run with --verbose for details)");
    }
    vocab_ = llama_model_get_vocab(model_);
}

Model::~Model() {
    llama_model_free(model_);
}

std::string Model::description() const {
    char buf[256];
    llama_model_desc(model_, buf, sizeof(buf));
    return buf;
}

std::string Model::meta(const std::string & key) const {
    const int32_t n = llama_model_meta_val_str(model_, key.c_str(), nullptr, 0);
    if (n < 0) {
        return "";
    }
    std::string value(n + 1, '\0');
    llama_model_meta_val_str(model_, key.c_str(), value.data(), value.size());
    value.resize(n);
    return value;
}

std::string Model::chat_template() const {
    const char * tmpl = llama_model_chat_template(model_, nullptr);
    return tmpl ? tmpl : "";
}

std::vector<llama_token> Model::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    // A negative count is the size the tokens need.
    int32_t n = -llama_tokenize(vocab_, text.data(), text.size(), nullptr, 0, add_special, parse_special);
    std::vector<llama_token> tokens(n);
    if (n > 0 && llama_tokenize(vocab_, text.data(), text.size(), tokens.data(), n, add_special, parse_special) != n) {
        throw std::runtime_error("tokenization failed");
    }
    return tokens;
}

std::string Model::piece(llama_token token) const {
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, false);
    if (n >= 0) {
        return std::string(buf, n);
    }
    std::string out(-n, '\0');
    llama_token_to_piece(vocab_, token, out.data(), out.size(), 0, false);
    return out;
}

std::string Model::detokenize(const std::vector<llama_token> & tokens) const {
    std::string out;
    for (llama_token t : tokens) {
        out += piece(t);
    }
    return out;
}

llama_context * Model::new_context(const ContextParams & params) const {
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = params.n_ctx;
    cparams.n_batch = params.n_batch;
    cparams.n_ubatch = params.n_batch;
    cparams.n_seq_max = params.n_seq_max;
    cparams.kv_unified = params.kv_unified;
    cparams.no_perf = true;
    cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (params.n_threads > 0) {
        cparams.n_threads = params.n_threads;
        cparams.n_threads_batch = params.n_threads;
    }
    llama_context * ctx = llama_init_from_model(model_, cparams);
    if (ctx == nullptr) {
        throw std::runtime_error(path_ + ": could not create a llama.cpp context (n_ctx=" +
                                 std::to_string(params.n_ctx) + ")");
    }
    return ctx;
}

// Token text as it can appear inside a one-line message: control bytes escaped.
static std::string printable(const char * text) {
    std::string out;
    for (const char * c = text; *c; ++c) {
        const unsigned char b = (unsigned char) *c;
        if (b == '\n') {
            out += "\\n";
        } else if (b == '\\') {
            out += "\\\\";
        } else if (b < 0x20 || b == 0x7f) {
            char buf[8];
            snprintf(buf, sizeof(buf), "\\x%02x", b);
            out += buf;
        } else {
            out += (char) b;
        }
    }
    return out;
}

static std::string token_name(const llama_vocab * vocab, llama_token token) {
    if (token < 0) {
        return "none";
    }
    return std::to_string(token) + " '" + printable(llama_vocab_get_text(vocab, token)) + "'";
}

static std::string vocab_type_name(enum llama_vocab_type type) {
    switch (type) {
        case LLAMA_VOCAB_TYPE_SPM: return "SentencePiece";
        case LLAMA_VOCAB_TYPE_BPE: return "BPE";
        case LLAMA_VOCAB_TYPE_WPM: return "WordPiece";
        case LLAMA_VOCAB_TYPE_UGM: return "Unigram";
        default: return "type " + std::to_string((int) type);
    }
}

void check_vocab_compatible(const Model & llm, const Model & slm) {
    const llama_vocab * a = llm.vocab();
    const llama_vocab * b = slm.vocab();
    // One line that names both models, then what differs (the CLI prints it as is).
    const std::string names = "the LLM " + llm.path() + " and the sLM " + slm.path() + " do not share a vocabulary: ";
    if (llama_vocab_type(a) != llama_vocab_type(b)) {
        throw std::runtime_error(names + "different tokenizer types (" + vocab_type_name(llama_vocab_type(a)) +
                                 " vs " + vocab_type_name(llama_vocab_type(b)) + ")");
    }
    const int kMaxSizeDifference = 128;  // as llama.cpp's speculative example
    const int n_a = llama_vocab_n_tokens(a);
    const int n_b = llama_vocab_n_tokens(b);
    if (std::abs(n_a - n_b) > kMaxSizeDifference) {
        throw std::runtime_error(names + std::to_string(n_a) + " vs " + std::to_string(n_b) + " tokens");
    }
    if (llama_vocab_get_add_bos(a) != llama_vocab_get_add_bos(b) ||
        (llama_vocab_get_add_bos(a) && llama_vocab_bos(a) != llama_vocab_bos(b))) {
        throw std::runtime_error(names + "different BOS tokens (" + token_name(a, llama_vocab_bos(a)) + " vs " +
                                 token_name(b, llama_vocab_bos(b)) + ")");
    }
    // The speculative example also requires the same EOS: here both models must end on the same token.
    if (llama_vocab_get_add_eos(a) != llama_vocab_get_add_eos(b) || llama_vocab_eos(a) != llama_vocab_eos(b)) {
        throw std::runtime_error(names + "different EOS tokens (" + token_name(a, llama_vocab_eos(a)) + " vs " +
                                 token_name(b, llama_vocab_eos(b)) + ")");
    }
    const int kFirstChecked = 5;  // as llama.cpp's speculative example
    for (int i = kFirstChecked; i < std::min(n_a, n_b); ++i) {
        if (std::strcmp(llama_vocab_get_text(a, i), llama_vocab_get_text(b, i)) != 0) {
            throw std::runtime_error(names + "token " + token_name(a, i) + " vs '" +
                                     printable(llama_vocab_get_text(b, i)) + "'");
        }
    }
}

}  // namespace drift
