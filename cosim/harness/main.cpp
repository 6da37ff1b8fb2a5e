// npuforge plain Verilator harness: the second RTL engine (see npuforge/cosim/harness.py).
//
// It drives the same test bench (npuforge_tb, clock as a port) around the same simulation
// top as the cocotb flow, with the same pin sequence per job (cosim/bench.py):
// rst for 2 cycles, load, go, wait for `finished`, read the result pins, dump.
// One edge = clk 0 -> 1; inputs change only between edges, as the cocotb bench's do.
//
// Usage: npuforge_harness JOBS_FILE   (run in the run folder)
// JOBS_FILE: "<beat_bytes> <setup_cycles> <njobs>" then one "<max_cycles> <copy_words>" line per job.
// Per job it renames job<i>.prog.bin / job<i>.dram.bin to the files the top loads and
// job<i>.out.hex from the dump; results go to results.json (counters as one hex string).
//
// With NPF_COUNT defined (the `-power` build) the harness also counts switching activity
// in C++ (npf_counters.h, generated from npuforge.cosim.toggles) and writes activity.jsonl.
#include "Vtop.h"
#include "verilated.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifdef NPF_COUNT
#include "Vtop___024root.h"
#include "npf_counters.h"
#endif

namespace {

struct Sim {
    VerilatedContext* ctx;
    Vtop* top;
    uint64_t edges = 0;
#ifdef NPF_COUNT
    NpfCounters counters;
#endif

    // One rising edge, then the falling one (the model holds no negedge logic; the second
    // eval settles the inputs the caller changes next).
    inline void tick() {
#ifdef NPF_COUNT
        counters.sample(top->rootp);   // x[k]: values just before edge k
#endif
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        ++edges;
    }
    void pulse(CData& pin, int cycles = 1) {
        pin = 1;
        for (int i = 0; i < cycles; ++i) tick();
        pin = 0;
        tick();
    }
};

std::string hex_wide(const WData* w, int words) {
    std::string s;
    char buf[16];
    for (int i = words - 1; i >= 0; --i) {
        std::snprintf(buf, sizeof buf, "%08x", w[i]);
        s += buf;
    }
    return s;
}

// Peak resident memory of this process since its exec (VmHWM), in KiB; 0 if unknown.
// Measured here because a parent's rusage of a vforked child also counts the parent's pages.
unsigned long long peak_rss_kib() {
    FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kib = 0;
    while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "VmHWM: %llu kB", &kib) == 1) break;
    std::fclose(f);
    return kib;
}

bool move(const std::string& from, const std::string& to) {
    if (std::rename(from.c_str(), to.c_str()) != 0) {
        std::fprintf(stderr, "npuforge_harness: cannot rename %s to %s\n", from.c_str(), to.c_str());
        return false;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s JOBS_FILE\n", argv[0]);
        return 2;
    }
    FILE* jf = std::fopen(argv[1], "r");
    if (!jf) {
        std::fprintf(stderr, "npuforge_harness: cannot open %s\n", argv[1]);
        return 2;
    }
    unsigned long long beat_bytes = 0, setup = 0, njobs = 0;
    if (std::fscanf(jf, "%llu %llu %llu", &beat_bytes, &setup, &njobs) != 3) {
        std::fprintf(stderr, "npuforge_harness: %s: bad header\n", argv[1]);
        return 2;
    }
    std::vector<std::pair<unsigned long long, unsigned long long>> jobs(njobs);
    for (auto& j : jobs) {
        if (std::fscanf(jf, "%llu %llu", &j.first, &j.second) != 2) {
            std::fprintf(stderr, "npuforge_harness: %s: bad job line\n", argv[1]);
            return 2;
        }
    }
    std::fclose(jf);

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vtop>(ctx.get(), "TOP");
    Sim sim{ctx.get(), top.get()};
    top->clk = 0;
    top->rst = top->load = top->go = top->dump = 0;
    top->max_cycles = 0;
    top->prog_words = 0;
    top->eval();
    sim.tick();

    FILE* out = std::fopen("results.json", "w");
#ifdef NPF_COUNT
    FILE* act = std::fopen("activity.jsonl", "w");
#endif
    std::fputs("[", out);
    for (size_t i = 0; i < jobs.size(); ++i) {
        using clock = std::chrono::steady_clock;
        auto t0 = clock::now();
        std::string n = "job" + std::to_string(i);
        if (!move(n + ".prog.bin", "prog.bin") || !move(n + ".dram.bin", "dram_in.bin")) return 3;
        auto t1 = clock::now();
        top->max_cycles = jobs[i].first;
        top->prog_words = (IData)jobs[i].second;
        sim.pulse(top->rst, 2);
        sim.pulse(top->load);
#ifdef NPF_COUNT
        sim.counters.clear();   // the HDL probes clear on load as well
#endif
        auto t_go = clock::now();
        sim.pulse(top->go);
        const uint64_t limit = jobs[i].first + setup + 100;
        uint64_t waited = 0;
        while (!top->finished) {
            sim.tick();
            if (++waited > limit) {
                std::fprintf(stderr, "npuforge_harness: job %zu: the simulation top did not finish within %llu cycles\n",
                             i, (unsigned long long)limit);
                return 4;
            }
        }
        auto t_done = clock::now();
        unsigned lo = top->dram_wr_lo, hi = top->dram_wr_hi;
        std::string counters = hex_wide(top->counters.data(), (int)(sizeof(top->counters) / sizeof(WData)));
        int error = top->error, error_pc = top->error_pc, timed_out = top->timed_out;
#ifdef NPF_COUNT
        sim.counters.write(act);
#endif
        if (lo <= hi) {
            sim.pulse(top->dump);
            if (!move("dram_out.hex", n + ".out.hex")) return 3;
        } else {
            // The HDL probes write their line at the edge after `finished` rises.
            sim.tick();
        }
        auto t2 = clock::now();
        auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
        std::fprintf(out, "%s\n{\"error\": %d, \"error_pc\": %d, \"timed_out\": %s, \"counters_hex\": \"%s\", "
                     "\"wr_range\": ", i ? "," : "", error, error_pc, timed_out ? "true" : "false", counters.c_str());
        if (lo <= hi) std::fprintf(out, "[%u, %u]", lo, hi);
        else std::fputs("null", out);
        std::fprintf(out, ", \"run_s\": %.9f, \"sim_wall_s\": %.9f, \"job_wall_s\": %.9f, \"peak_rss_kib\": %llu}",
                     secs(t_go, t_done), secs(t1, t2), secs(t0, clock::now()), peak_rss_kib());
        std::fflush(out);
    }
    std::fputs("\n]\n", out);
    std::fclose(out);
#ifdef NPF_COUNT
    std::fclose(act);
#endif
    top->final();
    return 0;
}
