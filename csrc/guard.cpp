#include "guard.h"

#include <algorithm>
#include <cmath>

namespace drift {

std::vector<llama_token> plausible_tokens(const float * llm, int n, float alpha) {
    std::vector<llama_token> out;
    if (alpha <= 0.0f) {
        out.resize(n);
        for (int v = 0; v < n; ++v) {
            out[v] = v;
        }
        return out;
    }
    const float floor = *std::max_element(llm, llm + n) + std::log(alpha);
    for (int v = 0; v < n; ++v) {
        if (llm[v] >= floor) {
            out.push_back(v);
        }
    }
    return out;
}

namespace {

// KL(softmax(llm + s d) || softmax(llm)) = s E_p[d] - (lse(llm + s d) - lse(llm)), p the steered softmax.
double kl_at(const float * llm, const float * fused, int n, double s, double lse_llm) {
    double max = -INFINITY;
    for (int v = 0; v < n; ++v) {
        max = std::max(max, llm[v] + s * (fused[v] - llm[v]));
    }
    double z = 0.0, zd = 0.0;
    for (int v = 0; v < n; ++v) {
        const double d = fused[v] - llm[v];
        const double e = std::exp(llm[v] + s * d - max);
        z += e;
        zd += e * d;
    }
    return s * zd / z - (max + std::log(z) - lse_llm);
}

}  // namespace

float trust_scale(const float * llm, const float * fused, int n, float max_kl) {
    const double max = *std::max_element(llm, llm + n);
    double z = 0.0;
    for (int v = 0; v < n; ++v) {
        z += std::exp(llm[v] - max);
    }
    const double lse_llm = max + std::log(z);
    if (kl_at(llm, fused, n, 1.0, lse_llm) <= max_kl) {
        return 1.0f;
    }
    double lo = 0.0, hi = 1.0;
    while (hi - lo > 1e-6) {
        const double mid = 0.5 * (lo + hi);
        (kl_at(llm, fused, n, mid, lse_llm) <= max_kl ? lo : hi) = mid;
    }
    return (float) lo;
}

}  // namespace drift
