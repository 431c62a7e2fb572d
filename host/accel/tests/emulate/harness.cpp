// Runs kernels.cu under the CPU shim in the order cuda/pipeline.rs runs
// them, on data the Rust test wrote to DIR, and compares every step that
// should match the CPU path exactly (smooth image bits, Otsu threshold,
// mask, distance bits, peak candidates). Seeds are the CPU's markers
// (peaks::select runs on the host in both paths). Writes the final labels
// and the measurement sums for the Rust side to compare.
//
//   harness DIR   (exit 0: every exact step matched)
#include "shim.h"
#include "../../src/cuda/kernels.cu"

#include <cstdio>
#include <fstream>
#include <string>

template <class T>
std::vector<T> load(const std::string& path, size_t n) {
    std::vector<T> v(n);
    std::ifstream f(path, std::ios::binary);
    f.read(reinterpret_cast<char*>(v.data()), (std::streamsize)(n * sizeof(T)));
    if (!f) {
        std::fprintf(stderr, "cannot read %s\n", path.c_str());
        std::exit(2);
    }
    return v;
}
template <class T>
void save(const std::string& path, const std::vector<T>& v) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(v.data()), (std::streamsize)(v.size() * sizeof(T)));
}
static unsigned blocks(size_t n, unsigned b) { return (unsigned)std::max<size_t>(1, (n + b - 1) / b); }

static int failures = 0;
template <class T>
void compare(const char* step, const std::vector<T>& got, const std::vector<T>& want) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
            if (bad == 0) first = i;
            ++bad;
        }
    }
    if (bad) {
        ++failures;
        std::printf("%s: MISMATCH at %zu of %zu values (first at %zu)\n", step, bad, want.size(), first);
    } else {
        std::printf("%s: identical (%zu values)\n", step, want.size());
    }
}

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    std::string dir = argv[1];
    int w, h, r_blur, min_distance, seeds;
    unsigned min_area;
    {
        std::ifstream m(dir + "/meta.txt");
        m >> w >> h >> r_blur >> min_distance >> min_area >> seeds;
        if (!m) return 2;
    }
    size_t n = (size_t)w * h;
    u32 nu = (u32)n;
    auto samples = load<u16>(dir + "/samples.u16", n);
    auto taps = load<float>(dir + "/taps.f32", 2 * r_blur + 1);

    // Blur.
    std::vector<float> a(n), b(n);
    launch(blocks(n, 256), 256, false, [&] { to_f32(samples.data(), a.data(), nu); });
    launch(blocks(n, 256), 256, false, [&] { blur_rows(a.data(), b.data(), taps.data(), r_blur, w, h); });
    launch(blocks(n, 256), 256, false, [&] { blur_cols(b.data(), a.data(), taps.data(), r_blur, w, h); });
    compare("blur", a, load<float>(dir + "/smooth.f32", n));

    // Otsu.
    std::vector<float> mm(2), t(1);
    std::vector<u32> hist(256, 0);
    launch(1, 1024, true, [&] { minmax(a.data(), nu, mm.data()); });
    launch(blocks(n, 256), 256, true, [&] { histogram(a.data(), nu, mm.data(), hist.data()); });
    launch(1, 1, false, [&] { otsu_threshold(hist.data(), mm.data(), t.data()); });
    compare("otsu threshold", t, load<float>(dir + "/threshold.f32", 1));
    std::vector<u8> mask(n);
    launch(blocks(n, 256), 256, false, [&] { mask_above(a.data(), t.data(), nu, mask.data()); });
    compare("mask", mask, load<u8>(dir + "/mask.u8", n));

    // Distance transform.
    std::vector<float> dist(n), fs(n), zs((size_t)h * (w + 1));
    std::vector<int> vs(n);
    launch(blocks(w, 32), 32, false, [&] { edt_columns(mask.data(), dist.data(), w, h); });
    launch(blocks(h, 32), 32, false, [&] { edt_rows(dist.data(), fs.data(), vs.data(), zs.data(), w, h); });
    launch(blocks(n, 256), 256, false, [&] { edt_sqrt(dist.data(), nu); });
    compare("distance transform", dist, load<float>(dir + "/distance.f32", n));

    // Peak candidates (as a sorted set).
    int r = std::max(min_distance, 1);
    std::vector<u32> cand(n), count(1, 0);
    std::vector<float> cand_d(n);
    launch(blocks(n, 256), 256, false,
           [&] { peak_candidates(dist.data(), mask.data(), w, h, r, cand.data(), cand_d.data(), count.data()); });
    cand.resize(count[0]);
    std::sort(cand.begin(), cand.end());
    size_t want_count;
    {
        std::ifstream f(dir + "/candidates.u32", std::ios::binary | std::ios::ate);
        want_count = (size_t)f.tellg() / 4;
    }
    auto want_cands = load<u32>(dir + "/candidates.u32", want_count);
    if (cand.size() != want_cands.size()) {
        ++failures;
        std::printf("peak candidates: MISMATCH, %zu vs %zu\n", cand.size(), want_cands.size());
    } else {
        compare("peak candidates", cand, want_cands);
    }

    // Markers (the CPU's seeds, as peaks::select gives both paths), then the flood.
    std::vector<u32> kept = load<u32>(dir + "/seeds.u32", (size_t)seeds);
    std::vector<u32> labels(n, 0), other(n), changed(1);
    u32 su = (u32)seeds;
    launch(blocks(kept.size(), 256), 256, false, [&] { scatter_markers(kept.data(), su, nu, labels.data()); });
    std::vector<float> dm(1);
    launch(1, 1024, true, [&] { masked_max(dist.data(), mask.data(), nu, dm.data()); });
    float dmax = dm[0];
    float per_pixel = std::min(8.0f, 65536.0f / std::max(dmax, 1.0f));
    size_t top = std::min((size_t)(std::clamp(dmax, 0.0f, dmax) * per_pixel), (size_t)65536);
    std::vector<u32> present(top + 1, 0);
    u32 top_u = (u32)top;
    launch(blocks(n, 256), 256, false,
           [&] { level_presence(dist.data(), mask.data(), nu, dmax, per_pixel, top_u, present.data()); });
    size_t steps = 0;
    for (size_t lv = top + 1; lv-- > 0;) {
        if (!present[lv]) continue;
        u32 level = (u32)lv;
        do {
            changed[0] = 0;
            launch(blocks(n, 256), 256, false, [&] {
                flood_step(dist.data(), mask.data(), labels.data(), other.data(), w, h, dmax, per_pixel, level, changed.data());
            });
            launch(blocks(n, 256), 256, false, [&] {
                flood_step(dist.data(), mask.data(), other.data(), labels.data(), w, h, dmax, per_pixel, level, changed.data());
            });
            steps += 2;
        } while (changed[0] != 0);
    }
    std::printf("flood: %zu levels, %zu steps\n", top + 1, steps);

    // Unreached components, relabelling.
    std::vector<u32> comp(n), comp2(n), any(1, 0);
    launch(blocks(n, 256), 256, false, [&] { unreached_init(mask.data(), labels.data(), nu, comp.data(), any.data()); });
    if (any[0]) {
        do {
            changed[0] = 0;
            launch(blocks(n, 256), 256, false, [&] { unreached_step(comp.data(), comp2.data(), w, h, changed.data()); });
            launch(blocks(n, 256), 256, false, [&] { unreached_step(comp2.data(), comp.data(), w, h, changed.data()); });
        } while (changed[0] != 0);
    }
    size_t space = (size_t)seeds + 1 + n;
    u32 space_u = (u32)space;
    std::vector<u32> area(space, 0), rank(space), total(1);
    launch(blocks(n, 256), 256, false, [&] { provisional_labels(labels.data(), comp.data(), nu, su, area.data()); });
    launch(blocks(space, 256), 256, false, [&] { keep_flags(area.data(), space_u, min_area, rank.data()); });
    launch(1, 1024, true, [&] { exclusive_scan(rank.data(), space_u, total.data()); });
    launch(blocks(n, 256), 256, false, [&] { relabel(labels.data(), nu, area.data(), rank.data(), min_area); });
    u32 cells = total[0];

    // Measurements.
    std::vector<u64> sums(4 * (size_t)cells, 0);
    std::vector<u32> box(4 * (size_t)cells);
    launch(blocks(cells, 256), 256, false, [&] { measure_init(box.data(), cells); });
    launch(blocks(n, 256), 256, false,
           [&] { measure(labels.data(), samples.data(), w, h, cells, sums.data(), box.data()); });
    save(dir + "/gpu_labels.u32", labels);
    save(dir + "/gpu_sums.u64", sums);
    save(dir + "/gpu_boxes.u32", box);
    std::printf("cells: %u\n", cells);
    return failures == 0 ? 0 : 1;
}
