"""The execution model: how a program runs, what is legal, and which error an illegal program gets.

This text is the contract between the reference simulator, the RTL and the
cycle model; ``docs/isa.md`` includes it verbatim.
"""

EXECUTION_MODEL = """\
### Machine state

- 16 scalar registers `r0`..`r15`, 32 bits each; `r0` always reads 0 and writes to it are dropped.
- Scratchpad: `spad_rows` rows of `spad_row_bytes` int8 values (`max(rows, cols)` each).
- Accumulator: `acc_rows` rows of `cols` int32 values.
- The weight tile `W`: `rows` x `cols` int8 values held in the array (zero at start).
- DRAM: `dram_bytes` bytes, byte addressed. Everything else starts at zero.
- Four dependency-token channels `L2C`, `C2L`, `C2S`, `S2C`, each a counter from 0 to `token_depth`, starting at 0.
- Three instruction queues (load, compute, store), each holding at most `queue_depth` instructions.

### Dispatch

One dispatcher reads the program in order from instruction 0. A scalar instruction
(`nop`, `seti`, `addi`, `dbnz`, `fence`, `halt`) is executed by the dispatcher itself.
Any other instruction is checked, its register operands are resolved (every `rN+off`
becomes the absolute address `(r[N] + off) mod 2**32`; `qreg` becomes the register's
value), and the resolved instruction is pushed into its queue, waiting while the queue
is full. Register values are therefore those at dispatch time, in program order.

Checks are made when the dispatcher reaches an instruction (before it waits for queue
space), in this order, each stopping the machine with its error and the instruction's index:

1. `PC_RANGE`: the instruction index is outside the instruction memory (`imem_words`).
2. `ILLEGAL_INSTR`: the word has an unknown opcode (0 included: empty instruction memory
   traps), a reserved bit set, or a dependency flag its queue does not have (see below).
3. `ADDR_RANGE`: with `rows > 0`, any row the instruction touches lies outside its memory:
   scratchpad rows `[a, a+rows)` must lie in `[0, spad_rows)`, accumulator rows in
   `[0, acc_rows)` (`preload` touches `rows`-of-the-array scratchpad rows, whatever its
   `rows` field); `len` must be at most `spad_row_bytes` for scratchpad transfers and at
   most `cols` for accumulator transfers; and, when `len > 0`, every DRAM byte of every row,
   `[dram + i*stride, dram + i*stride + len*element_bytes)`, must lie in `[0, dram_bytes)`.
   A `dbnz` whose taken target is outside the instruction memory is `PC_RANGE`.

`fence` waits until every queue is empty and every unit idle. `halt` stops dispatch; the
run ends when every queue is empty and every unit idle.

### Units and tokens

The load, compute and store units each execute their own queue in order, one instruction
at a time, concurrently with each other and with dispatch. Before an instruction executes,
its unit takes one token from each channel it pops (waiting until the counter is above 0);
after it has executed completely (its last write is visible to every unit), the unit adds
one token to each channel it pushes (waiting while the counter is at `token_depth`).
A unit takes an instruction out of its queue when it starts on it, before waiting for its
pop tokens, so the instruction a unit holds (waiting for tokens, executing or waiting to
push) no longer occupies a queue slot. Pops are taken all at once, when every channel the
instruction pops is above 0; pushes are given all at once, when every channel it pushes is
below `token_depth`.

| queue | `pop_prev` | `pop_next` | `push_prev` | `push_next` |
|---|---|---|---|---|
| load | illegal | takes `C2L` | illegal | gives `L2C` |
| compute | takes `L2C` | takes `S2C` | gives `C2L` | gives `C2S` |
| store | takes `C2S` | illegal | gives `S2C` | illegal |
| scalar | illegal | illegal | illegal | illegal |

Memory accesses of different units are ordered only through tokens. A program whose
result depends on timing (two units touching the same rows or DRAM bytes, at least one
writing, with no token path between them) has no defined result.

`DEADLOCK`: the machine stops with `DEADLOCK` when no unit and not the dispatcher can
ever make progress again: every unit is idle with an empty queue or waits on a token,
and the dispatcher is waiting on a full queue, on `fence`, or on the end of a `halt`,
while at least one of them waits. The reported index is the smallest index among the
waiting instructions: those the units hold (instructions still in a queue do not count),
and the dispatcher's current instruction when it waits on a full queue or on a `fence`
(at `halt` it does not). Because each unit runs its stream in
order and tokens and queues are bounded counters, whether and where a program
deadlocks does not depend on timing; the RTL and every model report the same.

### Errors

When an error stops the machine, the contents of the memories are undefined (work in
flight may or may not have finished); the error code and the instruction index are
defined and are the same at every fidelity. `STEP_LIMIT` exists only in the simulators:
the run dispatched more instructions than the caller's limit without halting.
"""
