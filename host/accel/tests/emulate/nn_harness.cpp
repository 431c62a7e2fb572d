// Runs nn.cu under the CPU shim: executes a launch plan that cuda/net.rs
// wrote (NetSpec::plan, Plan::to_text) exactly as GpuNet::run launches it
// on a GPU, on the weights and input the Rust test wrote, and saves the
// output slot. Used by host/inference/tests/cuda_models.rs to compare the
// kernels with tract on the shipped models.
//
//   nn_harness DIR INPUT_SLOT OUTPUT_SLOT
//   DIR/plan.txt, DIR/weights.f32, DIR/input.f32 -> DIR/output.f32
#include "shim.h"
#include "../../src/cuda/nn.cu"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

static std::vector<float> load(const std::string& path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) {
        std::fprintf(stderr, "cannot read %s\n", path.c_str());
        std::exit(2);
    }
    size_t bytes = (size_t)f.tellg();
    std::vector<float> v(bytes / 4);
    f.seekg(0);
    f.read(reinterpret_cast<char*>(v.data()), (std::streamsize)bytes);
    return v;
}

int main(int argc, char** argv) {
    if (argc != 4) return 2;
    std::string dir = argv[1];
    size_t input_slot = std::stoul(argv[2]), output = std::stoul(argv[3]);
    std::vector<float> weights = load(dir + "/weights.f32");
    std::vector<float> input = load(dir + "/input.f32");
    std::ifstream plan(dir + "/plan.txt");
    std::string word;
    size_t count;
    plan >> word >> count;
    if (word != "slots") return 2;
    std::vector<std::vector<float>> slots(count);
    for (auto& s : slots) {
        size_t n;
        plan >> n;
        s.assign(n, NAN);  // unwritten values show up as NaN in the output
    }
    if (slots.at(input_slot).size() != input.size()) {
        std::fprintf(stderr, "input: %zu values for a slot of %zu\n", input.size(), slots[input_slot].size());
        return 2;
    }
    slots[input_slot] = input;
    std::string kernel;
    int launches = 0;
    while (plan >> kernel) {
        unsigned grid, block;
        size_t nb, ni;
        plan >> grid >> block >> nb;
        std::vector<float*> p(nb);
        for (auto& ptr : p) {
            std::string b;
            plan >> b;
            size_t k = std::stoul(b.substr(1));
            ptr = b[0] == 's' ? slots.at(k).data() : weights.data() + k;
        }
        plan >> ni;
        std::vector<int> i(ni);
        for (auto& v : i) plan >> v;
        if (kernel == "conv2d" && nb == 4 && ni == 15) {
            launch(grid, block, true, [&] {
                conv2d(p[0], p[1], p[2], p[3], i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7], i[8], i[9], i[10], i[11],
                       i[12], i[13], i[14]);
            });
        } else if (kernel == "nn_relu" && nb == 2 && ni == 1) {
            launch(grid, block, false, [&] { nn_relu(p[0], p[1], i[0]); });
        } else if (kernel == "nn_sigmoid" && nb == 2 && ni == 1) {
            launch(grid, block, false, [&] { nn_sigmoid(p[0], p[1], i[0]); });
        } else if (kernel == "nn_add" && nb == 3 && ni == 2) {
            launch(grid, block, false, [&] { nn_add(p[0], p[1], p[2], i[0], i[1]); });
        } else if (kernel == "depth_to_space" && nb == 2 && ni == 6) {
            launch(grid, block, false, [&] { depth_to_space(p[0], p[1], i[0], i[1], i[2], i[3], i[4], i[5]); });
        } else {
            std::fprintf(stderr, "unknown launch: %s with %zu pointers and %zu ints\n", kernel.c_str(), nb, ni);
            return 1;
        }
        ++launches;
    }
    std::ofstream out(dir + "/output.f32", std::ios::binary);
    auto& y = slots.at(output);
    out.write(reinterpret_cast<const char*>(y.data()), (std::streamsize)(y.size() * 4));
    std::printf("%d launches\n", launches);
    return 0;
}
