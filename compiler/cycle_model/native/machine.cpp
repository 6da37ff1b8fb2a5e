// The cycle model's machine in C++: the same rules as machine.py, dispatch.py, engines.py and
// dma.py of npuforge.compiler.cycle_model, statement for statement, for speed. The Python model
// is the readable specification; tests hold this engine to it (and both to the RTL).
//
// Inputs (built by native.py): a table of pre-decoded instructions (one row of TABLE_COLS
// int64 per pc, plus one row for the word 0 that every pc past the program reads) and the
// config values the timing depends on. Outputs: counters, activity, the stop, the registers
// at the stop and, on request, the accepted commands in acceptance order (to execute them).
//
// Build: c++ -O2 -shared -fPIC machine.cpp (native.py does it, cached by source hash).

#include <cstdint>
#include <deque>
#include <vector>
#include <algorithm>

namespace {

typedef int64_t i64;
const i64 MASK32 = 0xffffffffLL;
const int NUM_REGS = 16;
const int PUSH_SLOTS = 4;
const i64 NEVER = INT64_MAX;

// ---- the instruction table (columns; native.py writes them) --------------------------------
enum Col {
    K_KIND, K_OP, K_A, K_B, K_C, K_D,               // kind; opcode or error code; scalar: rd rs imm target
    K_UNIT = 2, K_POPS, K_PUSHES, K_ACCUM,          // queue: unit, token channel masks, accumulate
    K_RCLASS, K_F0, K_F1, K_F2, K_F3, K_ROWS, K_LEN, K_STRIDE, K_ELEM, K_ISACC, K_QREG,
    K_CCLASS, K_REQUANT, K_VEC_ACT,
    TABLE_COLS
};
enum Kind { KIND_SCALAR = 0, KIND_QUEUE = 1, KIND_ERROR = 2 };
enum RClass { R_DMA = 0, R_PRELOAD = 1, R_COMPUTE = 2 };
enum CClass { C_PRELOAD = 0, C_MATMUL = 1, C_VEC1 = 2, C_VEC2 = 3 };
// Scalar opcodes, passed in the config (their ISA values).
enum ConfigIdx {
    G_ROWS, G_COLS, G_DQ, G_DT, G_BEAT, G_DRAM_LATENCY, G_IMEM, G_SPAD_ROWS, G_ACC_ROWS,
    G_SPAD_ROW_BYTES, G_DRAM_BYTES, G_REQUANT_LATENCY, G_COMPUTE_TAIL, G_VECTOR_STAGES,
    G_DISPATCH_STAGES,
    G_OP_NOP, G_OP_HALT, G_OP_FENCE, G_OP_SETI, G_OP_ADDI, G_OP_DBNZ,
    G_MAX_CYCLES, G_LOG,
    CONFIG_LEN
};
// Stop kinds (status[0]).
enum Stop { S_FINISHED = 0, S_DECODE = 1, S_FETCH = 2, S_BRANCH = 3, S_ADDR = 4, S_DEADLOCK = 5,
            S_LIMIT = 6, S_MODEL = 7 };
// Counter and activity order: COUNTER_NAMES of hw/counters.py and ACTIVITY_NAMES of engines.py.
enum Counter { C_CYCLES, C_INSTR, C_LOAD_BUSY, C_LOAD_STALL, C_COMP_BUSY, C_COMP_STALL, C_STORE_BUSY,
               C_STORE_STALL, C_FULL_STALL, C_FENCE_STALL, C_RD_BYTES, C_WR_BYTES, C_RD_BEATS, C_WR_BEATS,
               N_COUNTERS };
enum Activity { A_SPAD_R, A_SPAD_W, A_ACC_R, A_ACC_W, A_MACS, A_ROWS, A_WROWS, A_VROWS, A_QROWS,
                A_VADD_ROWS, A_VMAX_ROWS, A_VRELU_ROWS, A_VQUANT_ROWS, N_ACT };
const int PRODUCER[4] = {0, 1, 1, 2};
const int CONSUMER[4] = {1, 0, 2, 1};
const int UNIT_PUSH_CHANS[3] = {1 << 0, (1 << 1) | (1 << 2), 1 << 3};

struct Cmd {
    int pc;
    int unit, pops, pushes;
    i64 mem, dram, src, dst, mult;
};

struct Pend { int chans; i64 number; int pc; };

struct Unit {
    std::deque<std::pair<i64, Cmd>> fifo;
    bool has_held = false;
    Cmd held;
    std::deque<Pend> pend;
    i64 outstanding = 0, accepted = 0, dones_seen = 0;
    bool clean = false;
    bool obs_idle = true, obs_waiting = false;
    int obs_wpc = 0;
};

struct Load {
    i64 B, L;
    bool has_pend = false;
    i64 pend_n = 0; bool pend_beat = false;
    bool act = false;
    i64 k = 0, n = 0; bool beat = false;
    i64 tk = 0, p_prev = -1;
    std::deque<i64> dones;
    i64 beats_total = 0, last_grant = -1;

    void catch_up(i64 t) {
        if (act && tk < t) {
            i64 done = t - tk;
            if (beat) { beats_total += done; last_grant = t - 1; }
            k += done;
            tk = t;
        }
    }
    i64 next_event() const { return act ? tk + n - k - 1 : NEVER; }
    void start(i64 jn, bool jbeat, i64 s) { n = jn; beat = jbeat; k = 0; tk = s; act = true; }
    void finish(i64 t) {
        i64 last = beat ? last_grant + L + 1 : t + 1;
        i64 p = std::max(p_prev + n, last);
        p_prev = p;
        dones.push_back(p + 1);
        act = false;
        if (has_pend) { start(pend_n, pend_beat, t + 1); has_pend = false; }
    }
    bool advance(i64 t, bool granted) {
        if (!act || tk > t) return false;
        if (beat && !granted) { tk = t + 1; return false; }
        k += 1;
        tk = t + 1;
        if (beat) { beats_total += 1; last_grant = t; }
        if (k == n) { finish(t); return true; }
        return false;
    }
    void accept(i64 jn, bool jbeat, i64 t) {
        if (act) { has_pend = true; pend_n = jn; pend_beat = jbeat; }
        else start(jn, jbeat, t + 1);
    }
};

struct PipeItem { i64 at, beats; bool last; };

struct Store {
    i64 D, delay;
    bool has_pend = false;
    std::vector<i64> pend;
    bool has_items = false;
    std::vector<i64> items;
    size_t idx = 0;
    i64 start_t = 0, inflight = 0;
    std::deque<PipeItem> pipe;
    i64 kb = 0;
    std::deque<i64> dones;
    i64 beats_total = 0;

    bool busy() const { return has_items || !pipe.empty(); }
    void start(std::vector<i64>& it, i64 s) { items.swap(it); has_items = true; idx = 0; start_t = s; }
    bool advance(i64 t, bool granted) {
        bool item_end = false;
        if (!pipe.empty() && pipe.front().at <= t) {
            PipeItem head = pipe.front();
            if (head.beats == 0) item_end = true;
            else if (granted) {
                beats_total += 1;
                kb += 1;
                if (kb == head.beats) { item_end = true; kb = 0; }
            }
            if (item_end) {
                pipe.pop_front();
                if (head.last) dones.push_back(t + 1);
            }
        }
        bool started = false;
        if (has_items && start_t <= t && inflight < D) {
            idx += 1;
            bool last = idx == items.size();
            pipe.push_back({t + delay, items[idx - 1], last});
            inflight += 1;
            if (last) {
                has_items = false;
                if (has_pend) { start(pend, t + 1); has_pend = false; started = true; }
            }
        }
        if (item_end) inflight -= 1;
        return started;
    }
    // Cycles t .. until-1 with the port to itself; returns the first cycle not stepped.
    i64 run_ahead(i64 t, i64 until, bool* granted) {
        i64 beats0 = beats_total;
        while (t < until && (has_items || !pipe.empty())) {
            size_t n = dones.size();
            if (!has_items && !pipe.empty() && pipe.front().at > t) {
                t = std::min(pipe.front().at, until);
                continue;
            }
            bool g = !pipe.empty() && pipe.front().at <= t && pipe.front().beats > 0;
            bool started = advance(t, g);
            t += 1;
            if (started || dones.size() != n) break;
        }
        *granted = beats_total != beats0;
        return t;
    }
    void accept(std::vector<i64>& it, i64 t) {
        if (has_items) { pend.swap(it); has_pend = true; }
        else start(it, t + 1);
    }
};

struct StopSignal { int kind; i64 pc; };

class Sim {
public:
    const i64* tab;
    i64 n_words;
    const i64* g;
    i64 Dq, Dt, B, max_cycles;
    Load load;
    Store store;
    i64 comp_ready_at = 0;
    std::deque<i64> comp_dones;
    i64 comp_quant_row = -1;        // the row the last slot writes when it is a VQUANT slot, else -1
    Unit units[3];
    i64 tokens[4] = {0, 0, 0, 0};
    i64 regs[NUM_REGS] = {0};
    i64 pc = 0;
    bool halted = false;
    i64 disp_next = 0;
    bool has_cur = false, cur_ok = true; i64 cur_pc = -1; Cmd cur_cmd;
    bool prio_store = false;
    i64 c[N_COUNTERS] = {0};
    i64 act[N_ACT] = {0};
    i64 lv[8] = {0};
    bool lv_ind[8] = {false};
    i64 lv_t = 1;
    i64 T = 0;
    int stop_kind = S_FINISHED;
    i64 stop_pc = 0;
    bool logging;
    std::vector<i64> log;

    Sim(const i64* table, i64 nw, const i64* cfg) : tab(table), n_words(nw), g(cfg) {
        Dq = g[G_DQ]; Dt = g[G_DT]; B = g[G_BEAT]; max_cycles = g[G_MAX_CYCLES];
        logging = g[G_LOG] != 0;
        load.B = B; load.L = g[G_DRAM_LATENCY];
        store.D = g[G_REQUANT_LATENCY] + 4; store.delay = g[G_REQUANT_LATENCY] + 2;
    }

    const i64* row(i64 p) const { return tab + TABLE_COLS * (p < n_words ? p : n_words); }

    // ---- resolve a queue instruction against the registers (refsim_units.Prepared) ----
    bool rows_ok(bool is_acc, i64 first, i64 rows) const {
        return first + rows <= (is_acc ? g[G_ACC_ROWS] : g[G_SPAD_ROWS]);
    }
    bool resolve(i64 p, Cmd& cmd) const {
        const i64* r = row(p);
        cmd.pc = (int)p; cmd.unit = (int)r[K_UNIT]; cmd.pops = (int)r[K_POPS]; cmd.pushes = (int)r[K_PUSHES];
        cmd.mem = cmd.dram = cmd.src = cmd.dst = cmd.mult = 0;
        i64 rows = r[K_ROWS];
        if (r[K_RCLASS] == R_DMA) {
            cmd.mem = (regs[r[K_F0]] + r[K_F1]) & MASK32;
            cmd.dram = (regs[r[K_F2]] + r[K_F3]) & MASK32;
            bool is_acc = r[K_ISACC] != 0;
            if (rows > 0) {
                if (!rows_ok(is_acc, cmd.mem, rows)) return false;
                if (r[K_LEN] > (is_acc ? g[G_COLS] : g[G_SPAD_ROW_BYTES])) return false;
                i64 end = cmd.dram + (rows - 1) * r[K_STRIDE] + r[K_LEN] * r[K_ELEM];
                if (r[K_LEN] > 0 && end > g[G_DRAM_BYTES]) return false;
            }
            cmd.mult = regs[r[K_QREG]];
        } else if (r[K_RCLASS] == R_PRELOAD) {
            cmd.src = (regs[r[K_F0]] + r[K_F1]) & MASK32;
            if (!rows_ok(false, cmd.src, g[G_ROWS])) return false;
        } else {
            bool matmul = r[K_CCLASS] == C_MATMUL;
            cmd.src = (regs[r[K_F0]] + r[K_F1]) & MASK32;
            cmd.dst = (regs[r[K_F2]] + r[K_F3]) & MASK32;
            if (rows > 0) {
                if (!rows_ok(!matmul, cmd.src, rows)) return false;
                if (!rows_ok(true, cmd.dst, rows)) return false;
            }
            cmd.mult = regs[r[K_QREG]];
        }
        return true;
    }

    static i64 row_beats(i64 addr, i64 nbytes, i64 beat) { return (addr % beat + nbytes - 1) / beat + 1; }

    // ---- hw/compute.py: vquant_bubbles (sets comp_quant_row) ----
    i64 vquant_bubbles(const Cmd& cmd, const i64* r, i64 rows, i64 quant_row) {
        i64 cc = r[K_CCLASS];
        bool vquant = cc == C_VEC1 && r[K_VEC_ACT] == A_VQUANT_ROWS;
        comp_quant_row = -1;
        if (g[G_VECTOR_STAGES] == 1 || cc == C_PRELOAD || rows == 0) return 0;
        bool reads_a = cc == C_VEC2 || (cc == C_MATMUL && r[K_ACCUM]);
        bool reads_b = cc == C_VEC1 || cc == C_VEC2;
        i64 bubbles = quant_row >= 0 && ((reads_a && cmd.dst == quant_row) || (reads_b && cmd.src == quant_row));
        if (!vquant) return bubbles;
        comp_quant_row = cmd.dst + rows - 1;
        return bubbles + (cmd.src + 1 == cmd.dst ? rows - 1 : 0);     // slot i reads src+i, slot i-1 wrote dst+i-1
    }

    // ---- engines.py: accept ----
    void accept(int u, const Cmd& cmd, i64 t) {
        const i64* r = row(cmd.pc);
        i64 rows = r[K_ROWS];
        if (u == 1) {
            i64 cc = r[K_CCLASS];
            i64 slots = cc == C_PRELOAD ? g[G_ROWS] : std::max<i64>(rows, 1);
            slots += vquant_bubbles(cmd, r, rows, t == comp_ready_at ? comp_quant_row : -1);
            comp_ready_at = t + slots;
            comp_dones.push_back(t + slots + g[G_COMPUTE_TAIL]);     // done - slots of compute_timing
            if (cc == C_PRELOAD) {
                act[A_SPAD_R] += g[G_ROWS];
                act[A_WROWS] += g[G_ROWS];
            } else if (cc == C_MATMUL) {
                act[A_SPAD_R] += rows;
                act[A_ACC_W] += rows;
                act[A_MACS] += rows * g[G_ROWS] * g[G_COLS];
                act[A_ROWS] += rows;
                if (r[K_ACCUM]) act[A_ACC_R] += rows;
            } else {
                act[A_ACC_R] += rows * (cc == C_VEC2 ? 2 : 1);
                act[A_ACC_W] += rows;
                act[A_VROWS] += rows;
                act[r[K_VEC_ACT]] += rows;      // this op's own rows (native/__init__.py gives the index)
            }
        } else {
            bool is_load = u == 0;
            i64 len = r[K_LEN], elem = r[K_ELEM], stride = r[K_STRIDE];
            i64 nbytes = len * elem;
            // dma.py dma_items
            i64 count; bool has_beats; std::vector<i64> per;
            if (rows == 0) { count = 1; has_beats = false; }
            else if (nbytes == 0) { count = is_load ? rows : 1; has_beats = false; }
            else {
                has_beats = true;
                if (stride % B == 0) {
                    i64 pr = row_beats(cmd.dram, nbytes, B);
                    if (is_load) count = pr * rows;
                    else { count = rows; per.assign((size_t)rows, pr); }
                } else {
                    i64 total = 0;
                    if (!is_load) per.resize((size_t)rows);
                    for (i64 i = 0; i < rows; i++) {
                        i64 b = row_beats(cmd.dram + i * stride, nbytes, B);
                        total += b;
                        if (!is_load) per[(size_t)i] = b;
                    }
                    count = is_load ? total : rows;
                }
            }
            i64 moved = rows * len * elem;
            if (is_load) {
                c[C_RD_BYTES] += moved;
                act[r[K_ISACC] ? A_ACC_W : A_SPAD_W] += rows;
                load.accept(count, has_beats, t);
            } else {
                c[C_WR_BYTES] += moved;
                if (len) {
                    act[r[K_ISACC] ? A_ACC_R : A_SPAD_R] += rows;
                    if (r[K_REQUANT]) act[A_QROWS] += rows;
                }
                if (!has_beats) per.assign(1, 0);
                store.accept(per, t);
            }
        }
        if (logging) {
            log.push_back(cmd.pc); log.push_back(cmd.mem); log.push_back(cmd.dram);
            log.push_back(cmd.src); log.push_back(cmd.dst); log.push_back(cmd.mult);
        }
    }

    // ---- dispatch.py: scalar_run ----
    i64 scalar_run(i64 t) {
        i64 n = 0, imem = g[G_IMEM];
        while (t <= max_cycles) {
            i64 p = pc;
            if (p >= imem) break;
            const i64* r = row(p);
            if (r[K_KIND] != KIND_SCALAR) break;
            i64 op = r[K_OP];
            i64 rd = r[K_A];
            if (op == g[G_OP_DBNZ]) {
                i64 val = (regs[rd] - 1) & MASK32;
                if (rd != 0 && val != 0) {
                    i64 target = r[K_D];
                    if (!(0 <= target && target < imem)) break;
                    regs[rd] = val;
                    pc = target;
                } else {
                    if (rd) regs[rd] = val;
                    pc = p + 1;
                }
            } else if (op == g[G_OP_ADDI]) {
                if (rd) regs[rd] = (regs[r[K_B]] + r[K_C]) & MASK32;
                pc = p + 1;
            } else if (op == g[G_OP_SETI]) {
                if (rd) regs[rd] = r[K_C] & MASK32;
                pc = p + 1;
            } else if (op == g[G_OP_NOP]) {
                pc = p + 1;
            } else break;
            n += 1;
            t += 1;
        }
        c[C_INSTR] += n;
        return t;
    }

    i64 next_timer(i64 t) const {
        i64 best = NEVER;
        if (disp_next > t) best = std::min(best, disp_next);
        if (comp_ready_at > t) best = std::min(best, comp_ready_at);
        if (!comp_dones.empty()) best = std::min(best, comp_dones.front());
        if (!load.dones.empty()) best = std::min(best, load.dones.front());
        if (!store.dones.empty()) best = std::min(best, store.dones.front());
        i64 e = load.next_event();
        if (e != NEVER) best = std::min(best, std::max(e, t + 1));
        return best;
    }

    // Evaluate cycle t (machine.py cycle()); returns whether cycle t+1 may differ.
    bool cycle(i64 t) {
        bool changed = false;
        bool done[3] = {false, false, false};
        if (!load.dones.empty() && load.dones.front() == t) { load.dones.pop_front(); done[0] = true; }
        if (!comp_dones.empty() && comp_dones.front() == t) { comp_dones.pop_front(); done[1] = true; }
        if (!store.dones.empty() && store.dones.front() == t) { store.dones.pop_front(); done[2] = true; }
        bool ready[3] = {!load.has_pend, comp_ready_at <= t, !store.has_pend};

        // DRAM port
        bool lreq = false;
        if (load.act) {
            if (load.tk < t) load.catch_up(t);
            lreq = load.beat && load.tk <= t;
        }
        bool sreq = !store.pipe.empty() && store.pipe.front().at <= t && store.pipe.front().beats > 0;
        bool grant_store = sreq && (!lreq || prio_store);
        if (lreq || sreq) prio_store = !grant_store;

        // sequencers
        bool dec_any[3] = {false, false, false};
        bool d_push[3], d_accept[3], d_append[3], d_take[3];
        bool idle_all = true, stuck_all = true;
        bool have_waits = false; i64 min_wait = NEVER;
        if (comp_ready_at == t) units[1].clean = false;
        for (int u = 0; u < 3; u++) {
            Unit& un = units[u];
            if (un.clean && !done[u]) {
                if (un.obs_waiting) { have_waits = true; min_wait = std::min<i64>(min_wait, un.obs_wpc); }
                else if (!un.obs_idle) stuck_all = false;
                if (!un.obs_idle) idle_all = false;
                continue;
            }
            bool engine_idle = un.outstanding == 0;
            if (!un.has_held && un.pend.empty() && un.fifo.empty()) {
                if (!engine_idle) idle_all = stuck_all = false;
                else if (done[u]) { stop_kind = S_MODEL; throw StopSignal{S_MODEL, t}; }
                un.obs_idle = engine_idle; un.obs_waiting = false; un.obs_wpc = 0;
                un.clean = true;
                continue;
            }
            bool push_now = false, push_ok = true;
            if (!un.pend.empty()) {
                int chans = un.pend.front().chans;
                for (int ch = 0; ch < 4; ch++)
                    if ((chans >> ch & 1) && tokens[ch] >= Dt) push_ok = false;
                push_now = push_ok && un.pend.front().number <= un.dones_seen + (done[u] ? 1 : 0);
            }
            bool pops_ok = false;
            if (un.has_held) {
                pops_ok = true;
                for (int ch = 0; ch < 4; ch++)
                    if ((un.held.pops >> ch & 1) && tokens[ch] == 0) pops_ok = false;
            }
            bool accept_ = pops_ok && ready[u];
            bool append = accept_ && un.held.pushes != 0;
            bool head_valid = !un.fifo.empty() && un.fifo.front().first < t;
            bool take = false;
            if (head_valid && (!un.has_held || accept_) && !append) {
                if (un.pend.empty() || (push_now && un.pend.size() == 1)) take = true;
                else {
                    int head_push = un.fifo.front().second.pushes;
                    take = !(head_push && (int)un.pend.size() >= PUSH_SLOTS);
                    if (take) {
                        for (int ch = 0; ch < 4; ch++) {
                            if (!(UNIT_PUSH_CHANS[u] >> ch & 1)) continue;
                            i64 total = tokens[ch] + ((head_push >> ch) & 1);
                            for (const Pend& e : un.pend) total += (e.chans >> ch) & 1;
                            if (total > Dt) { take = false; break; }
                        }
                    }
                }
            }
            bool waiting = engine_idle && ((un.has_held && !pops_ok && un.pend.empty()) || (!un.pend.empty() && !push_ok));
            bool idle = !un.has_held && un.pend.empty() && engine_idle && !head_valid;
            int wpc = 0;
            if (waiting) {
                wpc = un.pend.empty() ? un.held.pc : un.pend.front().pc;
                have_waits = true; min_wait = std::min<i64>(min_wait, wpc);
            } else if (!idle) stuck_all = false;
            if (!idle) idle_all = false;
            un.obs_idle = idle; un.obs_waiting = waiting; un.obs_wpc = wpc;
            if (push_now || accept_ || take) {
                dec_any[u] = true;
                d_push[u] = push_now; d_accept[u] = accept_; d_append[u] = append; d_take[u] = take;
            } else un.clean = true;
        }

        // dispatcher
        bool dispatched = false, full_stall = false, fence_stall = false, halting = false, disp_stuck = false;
        int d_error = S_FINISHED;
        bool write = false;
        i64 new_pc = -1;
        const i64* r = nullptr;
        if (!halted && t >= disp_next) {
            i64 p = pc;
            if (p >= g[G_IMEM]) d_error = S_FETCH;
            else {
                r = row(p);
                if (r[K_KIND] == KIND_SCALAR) {
                    i64 op = r[K_OP];
                    if (op == g[G_OP_FENCE]) {
                        if (idle_all) { dispatched = true; new_pc = p + 1; }
                        else fence_stall = disp_stuck = true;
                    } else if (op == g[G_OP_HALT]) {
                        dispatched = halting = true;
                    } else if (op == g[G_OP_DBNZ]) {
                        i64 rd = r[K_A];
                        i64 val = (regs[rd] - 1) & MASK32;
                        if (rd != 0 && val != 0) {
                            i64 target = r[K_D];
                            if (!(0 <= target && target < g[G_IMEM])) d_error = S_BRANCH;
                            else new_pc = target;
                        } else new_pc = p + 1;
                        if (d_error == S_FINISHED) dispatched = true;
                    } else { dispatched = true; new_pc = p + 1; }
                } else if (r[K_KIND] == KIND_QUEUE) {
                    // its first cycle resolves it; with dispatch_stages 2 the checks and the write come after
                    bool resolving = false;
                    if (!has_cur || cur_pc != p) {
                        has_cur = true; cur_pc = p;
                        cur_ok = resolve(p, cur_cmd);
                        resolving = g[G_DISPATCH_STAGES] == 2;
                        changed = changed || resolving;
                    }
                    if (!cur_ok && !resolving) d_error = S_ADDR;
                    if (d_error == S_FINISHED && !resolving) {
                        if ((i64)units[cur_cmd.unit].fifo.size() < Dq) { dispatched = true; new_pc = p + 1; write = true; }
                        else full_stall = disp_stuck = true;
                    }
                } else d_error = S_DECODE;
            }
        }

        // end of run, errors, deadlock
        bool halt_seen = halted || halting;
        int stop = S_FINISHED; i64 spc = 0; bool stopping = false;
        if (d_error != S_FINISHED) { stop = d_error; spc = pc; stopping = true; }
        else if ((disp_stuck || halt_seen) && have_waits && stuck_all) {
            if (disp_stuck) min_wait = std::min(min_wait, pc);
            stop = S_DEADLOCK; spc = min_wait; stopping = true;
        }
        bool finished = !stopping && halt_seen && idle_all;

        // level counters
        i64 span = t - lv_t;
        for (int i = 0; i < 8; i++) if (lv_ind[i]) lv[i] += span;
        lv_ind[0] = units[0].outstanding != 0; lv_ind[1] = units[0].obs_waiting;
        lv_ind[2] = units[1].outstanding != 0; lv_ind[3] = units[1].obs_waiting;
        lv_ind[4] = units[2].outstanding != 0; lv_ind[5] = units[2].obs_waiting;
        lv_ind[6] = full_stall; lv_ind[7] = fence_stall;
        lv_t = t;
        if (dispatched) c[C_INSTR] += 1;

        // engines' items
        if (load.act && load.advance(t, lreq && !grant_store)) units[0].clean = false;
        if ((!store.pipe.empty() || store.has_items) && store.advance(t, grant_store)) units[2].clean = false;

        // tokens and sequencers
        for (int u = 0; u < 3; u++) {
            Unit& un = units[u];
            if (done[u]) { un.dones_seen += 1; un.outstanding -= 1; un.clean = false; }
            if (!dec_any[u]) continue;
            un.clean = false;
            if (d_push[u]) {
                int chans = un.pend.front().chans;
                un.pend.pop_front();
                for (int ch = 0; ch < 4; ch++) {
                    if (!(chans >> ch & 1)) continue;
                    tokens[ch] += 1;
                    Unit& far = units[CONSUMER[ch]];
                    if (far.has_held && (far.held.pops >> ch & 1)) far.clean = false;
                }
            }
            if (d_accept[u]) {
                Cmd cmd = un.held;
                for (int ch = 0; ch < 4; ch++) {
                    if (!(cmd.pops >> ch & 1)) continue;
                    tokens[ch] -= 1;
                    Unit& far = units[PRODUCER[ch]];
                    if (!far.pend.empty()) far.clean = false;
                }
                un.accepted += 1;
                if (d_append[u]) un.pend.push_back({cmd.pushes, un.accepted, cmd.pc});
                accept(u, cmd, t);
                un.outstanding += 1;
            }
            if (d_take[u]) { un.held = un.fifo.front().second; un.has_held = true; un.fifo.pop_front(); }
            else if (d_accept[u]) un.has_held = false;
        }

        // dispatcher
        if (write) {
            Unit& un = units[cur_cmd.unit];
            un.fifo.push_back({t, cur_cmd});
            if (!un.has_held) un.clean = false;
            has_cur = false;
        }
        if (dispatched) {
            if (r[K_KIND] == KIND_SCALAR) {
                i64 op = r[K_OP], rd = r[K_A];
                if (op == g[G_OP_SETI]) { if (rd) regs[rd] = r[K_C] & MASK32; }
                else if (op == g[G_OP_ADDI]) { if (rd) regs[rd] = (regs[r[K_B]] + r[K_C]) & MASK32; }
                else if (op == g[G_OP_DBNZ]) { if (rd) regs[rd] = (regs[rd] - 1) & MASK32; }
            }
            if (halting) { halted = true; changed = true; }
            else {
                pc = new_pc;
                if (write || (r[K_KIND] == KIND_SCALAR && r[K_OP] == g[G_OP_FENCE])) changed = true;
                else disp_next = scalar_run(t + 1);
            }
        }

        if (stopping || finished) { T = t; throw StopSignal{stop, spc}; }
        if (t >= max_cycles) throw StopSignal{S_LIMIT, t};
        return changed || !(units[0].clean && units[1].clean && units[2].clean);
    }

    void run() {
        i64 t = 1;
        try {
            while (true) {
                if (cycle(t)) { t += 1; continue; }
                i64 nxt = next_timer(t);
                if (store.busy()) {
                    if (load.act && load.beat) nxt = t + 1;
                    else {
                        bool granted;
                        nxt = store.run_ahead(t + 1, nxt != NEVER ? nxt : max_cycles + 1, &granted);
                        units[2].clean = false;
                        if (granted) prio_store = false;
                    }
                }
                if (nxt == NEVER) { stop_kind = S_MODEL; stop_pc = t; return; }
                if (nxt > max_cycles) { stop_kind = S_LIMIT; stop_pc = t; return; }
                t = nxt;
            }
        } catch (const StopSignal& s) {
            stop_kind = s.kind;
            stop_pc = s.pc;
            if (s.kind == S_LIMIT || s.kind == S_MODEL) return;
        }
        load.catch_up(T + 1);
        for (int i = 0; i < 8; i++) c[C_LOAD_BUSY + i] = lv[i] + (lv_ind[i] ? 1 : 0);
        c[C_CYCLES] = T;
        c[C_RD_BEATS] = load.beats_total;
        c[C_WR_BEATS] = store.beats_total;
    }
};

}  // namespace

extern "C" {

// Run one program. status: [stop kind, stop pc, log length (int64 values)];
// counters: N_COUNTERS; activity: N_ACT; regs: NUM_REGS. Returns a handle holding the log
// (read it with npf_log, free it with npf_free), or null when the config length is wrong.
void* npf_run(const int64_t* table, int64_t n_words, const int64_t* config, int64_t config_len,
              int64_t* status, int64_t* counters, int64_t* activity, int64_t* regs) {
    if (config_len != CONFIG_LEN) return nullptr;
    Sim* sim = new Sim(table, n_words, config);
    sim->run();
    status[0] = sim->stop_kind;
    status[1] = sim->stop_pc;
    status[2] = (int64_t)sim->log.size();
    for (int i = 0; i < N_COUNTERS; i++) counters[i] = sim->c[i];
    for (int i = 0; i < N_ACT; i++) activity[i] = sim->act[i];
    for (int i = 0; i < NUM_REGS; i++) regs[i] = sim->regs[i];
    return sim;
}

void npf_log(void* handle, int64_t* out) {
    Sim* sim = static_cast<Sim*>(handle);
    std::copy(sim->log.begin(), sim->log.end(), out);
}

void npf_free(void* handle) { delete static_cast<Sim*>(handle); }

int64_t npf_abi(void) { return (int64_t)TABLE_COLS * 1000 + CONFIG_LEN; }

}
