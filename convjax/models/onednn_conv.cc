// A stride-1 2-D convolution and its two gradients from oneDNN, as XLA FFI handlers.
//
// Built and loaded by onednn_conv.py (which says why it exists). Layouts are JAX's:
// activations NHWC, kernels HWIO, float32. oneDNN names dimensions logically (src NCHW,
// weights OIHW) and takes the physical order from a format tag, so JAX's buffers are used
// in place. The kernel is the only tensor reordered: oneDNN's fastest x86 kernels (brgemm and
// jit, AVX-512 on our machine) want the weights in a blocked layout of their choosing
// (`format_tag::any`), and a reorder of a 3x3x64x64 kernel is small next to the convolution.
// Asking for plain HWIO weights instead makes oneDNN fall back to slower kernels: the course
// CNN's train step ran at 614 images/s that way against ~1,100 (bench_train_speed.py).
//
// Each handler is a pure function of its input buffers: XLA owns every buffer, nothing is
// kept between calls except oneDNN's own primitive cache (keyed by shapes).

#include <cstdint>
#include <string>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dims = dnnl::memory::dims;
using tag = dnnl::memory::format_tag;
using F32Buffer = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;
constexpr auto kF32 = dnnl::memory::data_type::f32;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One convolution's geometry, from JAX's shapes: x (B,H,W,Cin), kernel (KH,KW,Cin,Cout),
// y (B,OH,OW,Cout), and the padding before each spatial axis (the padding after follows).
struct Geometry {
  dims src, weights, dst, strides, pad_before, pad_after;
};

Geometry MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> k,
                      ffi::Span<const int64_t> y, int64_t pad_top, int64_t pad_left) {
  Geometry g;
  g.src = {x[0], x[3], x[1], x[2]};
  g.weights = {k[3], k[2], k[0], k[1]};
  g.dst = {y[0], y[3], y[1], y[2]};
  g.strides = {1, 1};
  g.pad_before = {pad_top, pad_left};
  // Stride 1: out = in + before + after - k + 1.
  g.pad_after = {y[1] - x[1] - pad_top + k[0] - 1, y[2] - x[2] - pad_left + k[1] - 1};
  return g;
}

dnnl::memory::desc Nhwc(const dims& d) { return {d, kF32, tag::nhwc}; }
dnnl::memory::desc Hwio(const dims& d) { return {d, kF32, tag::hwio}; }
dnnl::memory::desc Any(const dims& d) { return {d, kF32, tag::any}; }

dnnl::convolution_forward::primitive_desc ForwardPd(const Geometry& g) {
  return {Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
          Nhwc(g.src), Any(g.weights), Nhwc(g.dst), g.strides, g.pad_before, g.pad_after};
}

// `user` memory as the layout `wanted`: itself when they agree, else a reordered copy.
dnnl::memory AsLayout(dnnl::memory user, const dnnl::memory::desc& wanted, dnnl::stream& s) {
  if (user.get_desc() == wanted) return user;
  dnnl::memory converted(wanted, Engine());
  dnnl::reorder(user, converted).execute(s, user, converted);
  return converted;
}

template <typename Fn>
ffi::Error Guarded(Fn fn) {
  try {
    fn();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN convolution: ") + e.what());
  }
}

ffi::Error ConvForwardImpl(F32Buffer x, F32Buffer kernel, F32Result y, int64_t pad_top,
                           int64_t pad_left) {
  return Guarded([&] {
    Geometry g = MakeGeometry(x.dimensions(), kernel.dimensions(), y->dimensions(), pad_top,
                              pad_left);
    auto pd = ForwardPd(g);
    dnnl::stream s(Engine());
    dnnl::memory src(Nhwc(g.src), Engine(), x.typed_data());
    dnnl::memory wei(Hwio(g.weights), Engine(), kernel.typed_data());
    dnnl::memory dst(Nhwc(g.dst), Engine(), y->typed_data());
    dnnl::memory wei_blocked = AsLayout(wei, pd.weights_desc(), s);
    dnnl::convolution_forward(pd).execute(
        s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei_blocked}, {DNNL_ARG_DST, dst}});
    s.wait();
  });
}

ffi::Error ConvInputGradImpl(F32Buffer dy, F32Buffer kernel, F32Result dx, int64_t pad_top,
                             int64_t pad_left) {
  return Guarded([&] {
    Geometry g = MakeGeometry(dx->dimensions(), kernel.dimensions(), dy.dimensions(), pad_top,
                              pad_left);
    dnnl::convolution_backward_data::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, Nhwc(g.src), Any(g.weights),
        Nhwc(g.dst), g.strides, g.pad_before, g.pad_after, ForwardPd(g));
    dnnl::stream s(Engine());
    dnnl::memory diff_dst(Nhwc(g.dst), Engine(), dy.typed_data());
    dnnl::memory wei(Hwio(g.weights), Engine(), kernel.typed_data());
    dnnl::memory diff_src(Nhwc(g.src), Engine(), dx->typed_data());
    dnnl::memory wei_blocked = AsLayout(wei, pd.weights_desc(), s);
    dnnl::convolution_backward_data(pd).execute(
        s, {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, wei_blocked},
            {DNNL_ARG_DIFF_SRC, diff_src}});
    s.wait();
  });
}

ffi::Error ConvKernelGradImpl(F32Buffer x, F32Buffer dy, F32Result dkernel, int64_t pad_top,
                              int64_t pad_left) {
  return Guarded([&] {
    Geometry g = MakeGeometry(x.dimensions(), dkernel->dimensions(), dy.dimensions(), pad_top,
                              pad_left);
    dnnl::convolution_backward_weights::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, Nhwc(g.src), Any(g.weights),
        Nhwc(g.dst), g.strides, g.pad_before, g.pad_after, ForwardPd(g));
    dnnl::stream s(Engine());
    dnnl::memory src(Nhwc(g.src), Engine(), x.typed_data());
    dnnl::memory diff_dst(Nhwc(g.dst), Engine(), dy.typed_data());
    dnnl::memory diff_wei(Hwio(g.weights), Engine(), dkernel->typed_data());
    bool direct = pd.diff_weights_desc() == diff_wei.get_desc();
    dnnl::memory diff_wei_blocked =
        direct ? diff_wei : dnnl::memory(pd.diff_weights_desc(), Engine());
    dnnl::convolution_backward_weights(pd).execute(
        s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst},
            {DNNL_ARG_DIFF_WEIGHTS, diff_wei_blocked}});
    if (!direct) dnnl::reorder(diff_wei_blocked, diff_wei).execute(s, diff_wei_blocked, diff_wei);
    s.wait();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvForward, ConvForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32Buffer>()  // x (B,H,W,Cin)
                                  .Arg<F32Buffer>()  // kernel (KH,KW,Cin,Cout)
                                  .Ret<F32Buffer>()  // y (B,OH,OW,Cout)
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvInputGrad, ConvInputGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32Buffer>()  // dy (B,OH,OW,Cout)
                                  .Arg<F32Buffer>()  // kernel (KH,KW,Cin,Cout)
                                  .Ret<F32Buffer>()  // dx (B,H,W,Cin)
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvKernelGrad, ConvKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<F32Buffer>()  // x (B,H,W,Cin)
                                  .Arg<F32Buffer>()  // dy (B,OH,OW,Cout)
                                  .Ret<F32Buffer>()  // dkernel (KH,KW,Cin,Cout)
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
