#include "length.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace drift {

namespace {

bool alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool letter(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

}  // namespace

int count_words(const std::string & text) {
    int n = 0;
    size_t i = 0;
    while (i < text.size()) {
        if (!alnum(text[i])) {
            ++i;
            continue;
        }
        ++n;
        while (i < text.size() && alnum(text[i])) {
            ++i;
        }
        if (i + 1 < text.size() && text[i] == '\'' && letter(text[i + 1])) {
            for (++i; i < text.size() && letter(text[i]); ++i) {
            }
        }
    }
    return n;
}

bool at_sentence_end(const std::string & text) {
    size_t end = text.size();
    while (end > 0 && (text[end - 1] == ' ' || text[end - 1] == '\t')) {
        --end;
    }
    if (end > 0 && (text[end - 1] == '\n' || text[end - 1] == '\r')) {  // a line break: the line must not lead on
        while (end > 0 && std::isspace((unsigned char) text[end - 1])) {
            --end;
        }
        return end > 0 && text[end - 1] != ':' && text[end - 1] != ',';
    }
    static const std::string closing = "\"')]*";
    while (end > 0 && closing.find(text[end - 1]) != std::string::npos) {
        --end;
    }
    // Curly closing quotes (UTF-8 E2 80 99 / 9D) close a sentence too.
    while (end >= 3 && (unsigned char) text[end - 3] == 0xE2 && (unsigned char) text[end - 2] == 0x80 &&
           ((unsigned char) text[end - 1] == 0x99 || (unsigned char) text[end - 1] == 0x9D)) {
        end -= 3;
    }
    if (end == 0) {
        return false;
    }
    const char c = text[end - 1];
    if (c == '!' || c == '?') {
        return true;
    }
    return c == '.' && !(end >= 2 && text[end - 2] >= '0' && text[end - 2] <= '9');
}

llama_token length_hazard(float * fused, int n_vocab, const std::vector<llama_token> & eog, float target,
                          float rate, const std::string & answer) {
    if (!(target > 0.0f) || rate == 0.0f || eog.empty()) {
        return -1;
    }
    const double n = count_words(answer);
    const double log_ratio = std::log((1.0 + target) / (1.0 + n));  // e-folds still to go (< 0: past the target)
    if (rate < 0.0f) {
        if (log_ratio > 0.0) {
            for (llama_token t : eog) {
                fused[t] += (float) (rate * log_ratio);
            }
        }
        return -1;
    }
    if (log_ratio >= 0.0 || !at_sentence_end(answer)) {
        return -1;
    }
    const double q = std::min(1.0 - std::exp(rate * log_ratio), 1.0 - 1e-9);
    llama_token best = eog[0];
    for (llama_token t : eog) {
        if (fused[t] > fused[best]) {
            best = t;
        }
    }
    // log-sum-exp of every other token: p(best) >= q  <=>  fused[best] >= lse_others + log(q / (1 - q)).
    float max = -INFINITY;
    for (int v = 0; v < n_vocab; ++v) {
        if (v != best) {
            max = std::max(max, fused[v]);
        }
    }
    double z = 0.0;
    for (int v = 0; v < n_vocab; ++v) {
        if (v != best) {
            z += std::exp((double) fused[v] - max);
        }
    }
    const double floor = max + std::log(z) + std::log(q / (1.0 - q));
    fused[best] = (float) std::max((double) fused[best], floor);
    return best;
}

}  // namespace drift
