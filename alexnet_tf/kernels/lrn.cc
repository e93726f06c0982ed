// Cross-channel local response normalisation on CPU, forward and input gradient, each one pass over memory.
//
// The maths is `alexnet_tf.layers._custom_gradient_lrn`'s: with s = k + (alpha/size) * W(x**2), W the
// window sum clipped at the first and last channel of each group, y = x * s**-beta and
//     dx = dy * s**-beta - 2 * beta * (alpha/size) * x * W(dy * x * s**(-beta-1)).
// With relu_first the input is the pre-activation z and x = relu(z); dx is then masked by z > 0.
// The forward keeps one float32 tensor for the gradient: s**-1/4 for the paper's beta = 0.75 (its cube
// and seventh power are the two powers the gradient needs), s itself for any other beta.
//
// Why a kernel of its own: under XLA on CPU these passes come out as five separate loops over memory,
// and the bfloat16 LRN net's training step then trails the no-norm net's by more than its target; here
// each direction reads its inputs and writes its outputs once, one pixel's channels at a time (they fit
// in L1). Everything is computed in float32; bfloat16 is read and written as its bits (rounded to
// nearest even, as TensorFlow's cast rounds).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace {

using tensorflow::bfloat16;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;

// bfloat16 is handled as its 16 bits, so that the loops below see plain integer loads and stores.
template <typename T>
struct Storage {
  using type = T;
};
template <>
struct Storage<bfloat16> {
  using type = uint16_t;
};

inline float Load(float value) { return value; }
inline float Load(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, 4);
  return value;
}
inline void Store(float value, float* out) { *out = value; }
inline void Store(float value, uint16_t* out) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  uint32_t quiet_nan = (bits >> 16) | 0x40u;
  *out = static_cast<uint16_t>(value != value ? quiet_nan : rounded);
}

struct Settings {
  int radius;
  float alpha_over_size;
  float beta;
  float k;
  int groups;
  bool relu_first;

  explicit Settings(OpKernelConstruction* context) {
    OP_REQUIRES_OK(context, context->GetAttr("radius", &radius));
    OP_REQUIRES_OK(context, context->GetAttr("alpha_over_size", &alpha_over_size));
    OP_REQUIRES_OK(context, context->GetAttr("beta", &beta));
    OP_REQUIRES_OK(context, context->GetAttr("k", &k));
    OP_REQUIRES_OK(context, context->GetAttr("groups", &groups));
    OP_REQUIRES_OK(context, context->GetAttr("relu_first", &relu_first));
    OP_REQUIRES(context, radius >= 0 && groups >= 1 && k > 0.0f,
                absl::InvalidArgumentError("LRN kernel needs radius >= 0, groups >= 1 and k > 0."));
  }
  bool paper_beta() const { return beta == 0.75f; }
};

// x = relu(z) with relu_first (NaN stays NaN, as tf.nn.relu keeps it), else z itself.
inline float Activate(float z, bool relu_first) { return relu_first && !(z > 0.0f) && z == z ? 0.0f : z; }

// out[c] = sum of v over c's window within its group, through a zero-padded scratch row.
inline void WindowSum(const float* __restrict__ v, float* __restrict__ padded, float* __restrict__ out,
                      int channels, int per_group, int radius) {
  for (int start = 0; start < channels; start += per_group) {
    std::fill(padded, padded + radius, 0.0f);
    std::copy(v + start, v + start + per_group, padded + radius);
    std::fill(padded + radius + per_group, padded + 2 * radius + per_group, 0.0f);
    float* __restrict__ o = out + start;
    for (int c = 0; c < per_group; ++c) o[c] = padded[c];
    for (int d = 1; d <= 2 * radius; ++d) {
      const float* __restrict__ shifted = padded + d;
      for (int c = 0; c < per_group; ++c) o[c] += shifted[c];
    }
  }
}

absl::Status CheckChannels(const Tensor& input, int groups, int64_t* channels, int64_t* pixels) {
  if (input.dims() < 1 || input.dim_size(input.dims() - 1) == 0) {
    return absl::InvalidArgumentError("LRN kernel needs a non-empty last (channel) axis.");
  }
  *channels = input.dim_size(input.dims() - 1);
  if (*channels % groups != 0) {
    return absl::InvalidArgumentError("LRN kernel: the channel count is not divisible by groups.");
  }
  *pixels = input.NumElements() / *channels;
  return absl::OkStatus();
}

template <typename T>
class LrnForwardOp : public OpKernel {
 public:
  explicit LrnForwardOp(OpKernelConstruction* context) : OpKernel(context), settings_(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    int64_t channels, pixels;
    OP_REQUIRES_OK(context, CheckChannels(input, settings_.groups, &channels, &pixels));
    Tensor* output = nullptr;
    Tensor* kept = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, input.shape(), &output));
    OP_REQUIRES_OK(context, context->allocate_output(1, input.shape(), &kept));
    using S = typename Storage<T>::type;
    const S* z = reinterpret_cast<const S*>(input.flat<T>().data());
    S* y = reinterpret_cast<S*>(output->flat<T>().data());
    float* kept_data = kept->flat<float>().data();
    const Settings settings = settings_;
    auto rows = [=](int64_t begin, int64_t end) {
      const int width = static_cast<int>(channels);
      const int per_group = width / settings.groups;
      const bool relu_first = settings.relu_first;
      const float k = settings.k, alpha_over_size = settings.alpha_over_size, beta = settings.beta;
      const bool paper_beta = settings.paper_beta();
      std::vector<float> x_row(width), square_row(width), sum_row(width), padded(per_group + 2 * settings.radius);
      float* __restrict__ x = x_row.data();
      float* __restrict__ square = square_row.data();
      float* __restrict__ sum = sum_row.data();
      for (int64_t pixel = begin; pixel < end; ++pixel) {
        const S* __restrict__ z_row = z + pixel * channels;
#pragma GCC ivdep
        for (int c = 0; c < width; ++c) {
          float v = Activate(Load(z_row[c]), relu_first);
          x[c] = v;
          square[c] = v * v;
        }
        WindowSum(square, padded.data(), sum, width, per_group, settings.radius);
        float* __restrict__ kept_row = kept_data + pixel * channels;
        S* __restrict__ y_row = y + pixel * channels;
        if (paper_beta) {
#pragma GCC ivdep
          for (int c = 0; c < width; ++c) {
            float r = 1.0f / std::sqrt(std::sqrt(k + alpha_over_size * sum[c]));  // s**-1/4
            kept_row[c] = r;
            Store(x[c] * (r * r * r), y_row + c);
          }
        } else {
          for (int c = 0; c < width; ++c) {
            float scale = k + alpha_over_size * sum[c];
            kept_row[c] = scale;
            Store(x[c] * std::pow(scale, -beta), y_row + c);
          }
        }
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
    workers->ParallelFor(pixels, 30 * channels, rows);
  }

 private:
  Settings settings_;
};

template <typename T>
class LrnBackwardOp : public OpKernel {
 public:
  explicit LrnBackwardOp(OpKernelConstruction* context) : OpKernel(context), settings_(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    const Tensor& upstream = context->input(1);
    const Tensor& kept = context->input(2);
    int64_t channels, pixels;
    OP_REQUIRES_OK(context, CheckChannels(input, settings_.groups, &channels, &pixels));
    OP_REQUIRES(context, upstream.shape() == input.shape() && kept.shape() == input.shape(),
                absl::InvalidArgumentError("LRN kernel: inputs, upstream and kept must have one shape."));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, input.shape(), &output));
    using S = typename Storage<T>::type;
    const S* z = reinterpret_cast<const S*>(input.flat<T>().data());
    const S* dy = reinterpret_cast<const S*>(upstream.flat<T>().data());
    const float* kept_data = kept.flat<float>().data();
    S* dx = reinterpret_cast<S*>(output->flat<T>().data());
    const Settings settings = settings_;
    auto rows = [=](int64_t begin, int64_t end) {
      const int width = static_cast<int>(channels);
      const int per_group = width / settings.groups;
      const bool relu_first = settings.relu_first;
      const float gradient_scale = 2.0f * settings.beta * settings.alpha_over_size;
      const float beta = settings.beta;
      const bool paper_beta = settings.paper_beta();
      std::vector<float> x_row(width), dy_row(width), power_row(width), t_row(width), sum_row(width),
          padded(per_group + 2 * settings.radius);
      float* __restrict__ x = x_row.data();
      float* __restrict__ g = dy_row.data();
      float* __restrict__ power = power_row.data();
      float* __restrict__ t = t_row.data();
      float* __restrict__ sum = sum_row.data();
      for (int64_t pixel = begin; pixel < end; ++pixel) {
        const S* __restrict__ z_row = z + pixel * channels;
        const S* __restrict__ dy_row_in = dy + pixel * channels;
        const float* __restrict__ kept_row = kept_data + pixel * channels;
        if (paper_beta) {
#pragma GCC ivdep
          for (int c = 0; c < width; ++c) {
            float v = Activate(Load(z_row[c]), relu_first);
            float r = kept_row[c];
            float r2 = r * r;
            float p = r2 * r;  // s**-3/4
            float d = Load(dy_row_in[c]);
            x[c] = v;
            g[c] = d;
            power[c] = p;
            t[c] = d * v * (p * (r2 * r2));  // dy * x * s**-7/4
          }
        } else {
          for (int c = 0; c < width; ++c) {
            float v = Activate(Load(z_row[c]), relu_first);
            float scale = kept_row[c];
            float p = std::pow(scale, -beta);
            float d = Load(dy_row_in[c]);
            x[c] = v;
            g[c] = d;
            power[c] = p;
            t[c] = d * v * (p / scale);
          }
        }
        WindowSum(t, padded.data(), sum, width, per_group, settings.radius);
        // The ReLU's gradient: 0 where x = relu(z) is not above 0 (TensorFlow's ReluGrad at z = 0 too).
#pragma GCC ivdep
        for (int c = 0; c < width; ++c) {
          float d = g[c] * power[c] - gradient_scale * x[c] * sum[c];
          t[c] = !relu_first || x[c] > 0.0f ? d : 0.0f;
        }
        S* __restrict__ dx_row = dx + pixel * channels;
#pragma GCC ivdep
        for (int c = 0; c < width; ++c) Store(t[c], dx_row + c);
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
    workers->ParallelFor(pixels, 40 * channels, rows);
  }

 private:
  Settings settings_;
};

absl::Status SameShapeAsInput(tensorflow::shape_inference::InferenceContext* c) {
  for (int i = 0; i < c->num_outputs(); ++i) c->set_output(i, c->input(0));
  return absl::OkStatus();
}

}  // namespace

#define LRN_ATTRS                  \
  Attr("T: {float, bfloat16}")     \
      .Attr("radius: int")         \
      .Attr("alpha_over_size: float") \
      .Attr("beta: float")         \
      .Attr("k: float")            \
      .Attr("groups: int")         \
      .Attr("relu_first: bool")

REGISTER_OP("AlexnetLrnForward")
    .Input("inputs: T")
    .Output("outputs: T")
    .Output("kept: float")
    .LRN_ATTRS
    .SetShapeFn(SameShapeAsInput);

REGISTER_OP("AlexnetLrnBackward")
    .Input("inputs: T")
    .Input("upstream: T")
    .Input("kept: float")
    .Output("input_gradient: T")
    .LRN_ATTRS
    .SetShapeFn(SameShapeAsInput);

#define REGISTER_LRN_KERNELS(T)                                                                           \
  REGISTER_KERNEL_BUILDER(                                                                                \
      Name("AlexnetLrnForward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), LrnForwardOp<T>);   \
  REGISTER_KERNEL_BUILDER(                                                                                \
      Name("AlexnetLrnBackward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), LrnBackwardOp<T>);
REGISTER_LRN_KERNELS(float)
REGISTER_LRN_KERNELS(bfloat16)
