// The C++ load check's runner (pytest_torchexport/isolation/cpp.py builds it once per torch).
//
// Loads a saved artifact the way a C++ deployment does, runs it on the inputs in a tensor
// file and writes its outputs to another, in the same format (cpp.py's ``write_values``):
//
//   runner jit  MODEL.pt   INPUTS OUTPUTS DEVICE THREADS   torch::jit::load
//   runner aoti MODEL.pt2  INPUTS OUTPUTS DEVICE THREADS   AOTIModelPackageLoader
//   runner --serve                                         one request per line on stdin
//
// Exit status: 0 ran, 2 the artifact did not load, 3 it loaded but failed to run, 4 the
// inputs could not be read; the error's text is on stderr. Served, each stdin line is the six
// arguments above and an ERRORS path, tab-separated (kind, model, inputs, outputs, errors,
// device, threads); the answer is the status alone on a stdout line, the error's text in
// ERRORS. A session serves every artifact from one process, so a check pays a load, not
// libtorch's start. The file format is plain (no
// pickle): "TXCPP001", a uint32 count, then per value a kind byte (0 tensor, 1 int, 2 float,
// 3 bool, 4 None), a uint32-prefixed name (a keyword argument's, or empty), and for a tensor
// int32 ScalarType, uint32 ndim, int64 sizes, uint64 nbytes and its contiguous bytes; for a
// scalar its int64, double or byte. Little-endian, as every machine torch ships for.
#include <ATen/Parallel.h>
#include <torch/script.h>
// TORCH_VERSION: where each torch keeps it (torch/script.h brings in neither on torch 2.11)
#if __has_include(<torch/headeronly/version.h>)
#include <torch/headeronly/version.h>
#elif __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#ifndef TORCH_VERSION
#define TORCH_VERSION "unknown"
#endif
#if __has_include(<torch/csrc/inductor/aoti_package/model_package_loader.h>)
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#define TORCHEXPORT_HAS_AOTI 1
#endif

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Value {
  std::string name;
  c10::IValue value;
};

template <typename T>
T get(std::istream& in) {
  T v;
  in.read(reinterpret_cast<char*>(&v), sizeof(T));
  if (!in) throw std::runtime_error("truncated tensor file");
  return v;
}

template <typename T>
void put(std::ostream& out, T v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof(T));
}

std::vector<Value> read_values(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "TXCPP001", 8) != 0) throw std::runtime_error("not a TXCPP001 file: " + path);
  uint32_t count = get<uint32_t>(in);
  std::vector<Value> values;
  for (uint32_t i = 0; i < count; ++i) {
    uint8_t kind = get<uint8_t>(in);
    uint32_t name_len = get<uint32_t>(in);
    std::string name(name_len, '\0');
    in.read(name.data(), name_len);
    Value v{name, c10::IValue()};
    if (kind == 0) {
      auto dtype = static_cast<c10::ScalarType>(get<int32_t>(in));
      uint32_t ndim = get<uint32_t>(in);
      std::vector<int64_t> sizes(ndim);
      for (auto& s : sizes) s = get<int64_t>(in);
      uint64_t nbytes = get<uint64_t>(in);
      at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(dtype));
      if (nbytes != t.nbytes()) throw std::runtime_error("tensor byte count does not match its shape");
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(nbytes));
      if (!in) throw std::runtime_error("truncated tensor data");
      v.value = t;
    } else if (kind == 1) {
      v.value = get<int64_t>(in);
    } else if (kind == 2) {
      v.value = get<double>(in);
    } else if (kind == 3) {
      v.value = static_cast<bool>(get<uint8_t>(in));
    } else if (kind != 4) {
      throw std::runtime_error("unknown value kind " + std::to_string(kind));
    }
    values.push_back(std::move(v));
  }
  return values;
}

// Every leaf of an output, in order (tuples, lists and dicts' values walked as pytree does):
// tensors and scalars; None is skipped, as the Python side skips it.
void flatten(const c10::IValue& v, std::vector<c10::IValue>& out) {
  if (v.isTensor() || v.isInt() || v.isDouble() || v.isBool()) {
    out.push_back(v);
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) flatten(e, out);
  } else if (v.isList()) {
    for (const auto& e : v.toListRef()) flatten(e, out);
  } else if (v.isGenericDict()) {
    for (const auto& item : v.toGenericDict()) flatten(item.value(), out);
  } else if (!v.isNone()) {
    throw std::runtime_error(std::string("output of unsupported type ") + v.tagKind());
  }
}

void write_values(const std::string& path, const std::vector<c10::IValue>& values) {
  std::ofstream out(path, std::ios::binary);
  out.write("TXCPP001", 8);
  put<uint32_t>(out, static_cast<uint32_t>(values.size()));
  for (const auto& v : values) {
    if (v.isTensor()) {
      at::Tensor t = v.toTensor().detach().to(at::kCPU).contiguous();
      put<uint8_t>(out, 0);
      put<uint32_t>(out, 0);
      put<int32_t>(out, static_cast<int32_t>(t.scalar_type()));
      put<uint32_t>(out, static_cast<uint32_t>(t.dim()));
      for (auto s : t.sizes()) put<int64_t>(out, s);
      put<uint64_t>(out, static_cast<uint64_t>(t.nbytes()));
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    } else if (v.isInt()) {
      put<uint8_t>(out, 1), put<uint32_t>(out, 0), put<int64_t>(out, v.toInt());
    } else if (v.isDouble()) {
      put<uint8_t>(out, 2), put<uint32_t>(out, 0), put<double>(out, v.toDouble());
    } else {
      put<uint8_t>(out, 3), put<uint32_t>(out, 0), put<uint8_t>(out, v.toBool() ? 1 : 0);
    }
  }
  if (!out) throw std::runtime_error("cannot write " + path);
}

int fail(std::ostream& err, int code, const std::string& stage, const std::exception& e) {
  // c10::Error's what() carries a C++ backtrace after its message: the message is enough.
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  err << stage << ": " << (c10_error ? c10_error->what_without_backtrace() : e.what()) << std::endl;
  return code;
}

int run_one(const std::string& kind, const std::string& model, const std::string& inputs,
            const std::string& outputs, const std::string& device_name, int threads, std::ostream& err) {
  const c10::Device device(device_name);
  at::set_num_threads(threads);
  c10::InferenceMode guard;

  std::vector<Value> values;
  try {
    values = read_values(inputs);
    for (auto& v : values)
      if (v.value.isTensor()) v.value = v.value.toTensor().to(device);
  } catch (const std::exception& e) {
    return fail(err, 4, "inputs", e);
  }

  std::vector<c10::IValue> leaves;
  if (kind == "jit") {
    torch::jit::Module module;
    try {
      module = torch::jit::load(model, device);
      module.eval();
    } catch (const std::exception& e) {
      return fail(err, 2, "load", e);
    }
    try {
      std::vector<c10::IValue> args;
      torch::jit::Kwargs kwargs;
      for (auto& v : values) {
        if (v.name.empty()) args.push_back(v.value);
        else kwargs[v.name] = v.value;
      }
      flatten(module.forward(args, kwargs), leaves);
    } catch (const std::exception& e) {
      return fail(err, 3, "run", e);
    }
  } else if (kind == "aoti") {
#ifdef TORCHEXPORT_HAS_AOTI
    std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
    try {
      loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          model, "model", false, 1, device.is_cuda() ? device.index() : static_cast<c10::DeviceIndex>(-1));
    } catch (const std::exception& e) {
      return fail(err, 2, "load", e);
    }
    try {
      std::vector<at::Tensor> tensors;
      for (auto& v : values)
        if (v.value.isTensor()) tensors.push_back(v.value.toTensor());
      for (auto& t : loader->run(tensors)) leaves.emplace_back(t);
    } catch (const std::exception& e) {
      return fail(err, 3, "run", e);
    }
#else
    err << "load: this torch's C++ headers have no AOTIModelPackageLoader" << std::endl;
    return 2;
#endif
  } else {
    err << "unknown artifact kind " << kind << std::endl;
    return 64;
  }
  try {
    write_values(outputs, leaves);
  } catch (const std::exception& e) {
    return fail(err, 3, "run", e);
  }
  return 0;
}

// One request per stdin line until stdin closes (the session that started it has ended).
int serve() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::vector<std::string> fields;
    std::string::size_type start = 0, tab;
    while ((tab = line.find('\t', start)) != std::string::npos) {
      fields.push_back(line.substr(start, tab - start));
      start = tab + 1;
    }
    fields.push_back(line.substr(start));
    int code = 64;
    if (fields.size() == 7) {
      std::ofstream err(fields[4]);
      try {
        code = run_one(fields[0], fields[1], fields[2], fields[3], fields[5], std::stoi(fields[6]), err);
      } catch (const std::exception& e) {  // a device name or thread count it cannot read
        code = fail(err, 64, "request", e);
      }
    }
    std::cout << code << std::endl;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--version") {
    std::cout << TORCH_VERSION << std::endl;
    return 0;
  }
  if (argc == 2 && std::string(argv[1]) == "--serve") return serve();
  if (argc != 7) {
    std::cerr << "usage: runner jit|aoti MODEL INPUTS OUTPUTS DEVICE THREADS, or runner --serve" << std::endl;
    return 64;
  }
  return run_one(argv[1], argv[2], argv[3], argv[4], argv[5], std::stoi(argv[6]), std::cerr);
}
