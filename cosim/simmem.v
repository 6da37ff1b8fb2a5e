// npuforge simulation-only storage: a large word-addressed memory that the test bench
// loads from a binary file and dumps to a hex file in one call (never part of the synthesizable core).
//
// * One synchronous port: a read returns mem[addr] in the cycle after en & ~we; a write
//   updates the bytes selected by wstrb at the clock edge.
// * A rising edge on `load` zeroes what the previous load and the writes since then touched
//   (the whole memory the first time), then reads FILE_IN with $fread: an 8-byte
//   big-endian start address and an 8-byte word count, then the words (each most
//   significant byte first). It also resets the
//   written range. A binary read is several times faster than $readmemh's hex parsing
//   (16 MiB in well under a second), and the start address skips leading zeros.
// * A rising edge on `dump` writes the words in [wr_lo, wr_hi] (every word written since the
//   last load) to FILE_OUT with $writememh; wr_lo > wr_hi means nothing was written.
// Loading and dumping happen between runs, while the core is idle.
module npuforge_simmem #(
    parameter WIDTH = 128,
    parameter DEPTH = 1024,
    parameter ABITS = 10,
    parameter FILE_IN = "mem_in.hex",
    parameter FILE_OUT = "mem_out.hex"
) (
    input clk,
    input [ABITS-1:0] addr,
    input en,
    input we,
    input [WIDTH-1:0] wdata,
    input [WIDTH/8-1:0] wstrb,
    output reg [WIDTH-1:0] rdata,
    input load,
    input dump,
    output reg [ABITS:0] wr_lo,
    output reg [ABITS:0] wr_hi
);
  reg [WIDTH-1:0] mem [0:DEPTH-1];
  integer i;
  integer j;
  integer fd;
  integer nread;
  reg [63:0] start;
  reg [63:0] count;
  // Words the last load filled: with wr_lo..wr_hi, all that can be non-zero.
  reg [ABITS:0] ld_lo;
  reg [ABITS:0] ld_hi;

  initial begin
    rdata = 0;
    wr_lo = DEPTH;
    wr_hi = 0;
    ld_lo = 0;
    ld_hi = DEPTH - 1;
  end

  always @(posedge clk) begin
    if (en & ~we) rdata <= mem[addr];
    if (en & we) begin
      for (j = 0; j < WIDTH / 8; j = j + 1)
        if (wstrb[j]) mem[addr][j*8 +: 8] <= wdata[j*8 +: 8];
      if ({1'b0, addr} < wr_lo) wr_lo <= {1'b0, addr};
      if ({1'b0, addr} > wr_hi) wr_hi <= {1'b0, addr};
    end
    if (load) begin
      wr_lo <= DEPTH;
      wr_hi <= 0;
    end
  end

  always @(posedge load) begin
    // wr_lo/wr_hi still hold the previous run's range here (they reset at the next clock edge).
    for (i = ld_lo; i <= ld_hi; i = i + 1) mem[i] = {WIDTH{1'b0}};
    if (wr_lo <= wr_hi)
      for (i = wr_lo; i <= wr_hi; i = i + 1) mem[i] = {WIDTH{1'b0}};
    ld_lo = 1;
    ld_hi = 0;
    fd = $fopen(FILE_IN, "rb");
    if (fd != 0) begin
      nread = $fread(start, fd);
      nread = $fread(count, fd);
      if (start < DEPTH && count > 0 && start + count <= DEPTH) begin
        nread = $fread(mem, fd, start[31:0], count[31:0]);
        ld_lo = start[ABITS:0];
        ld_hi = start[ABITS:0] + count[ABITS:0] - 1;
      end
      $fclose(fd);
    end
  end

  always @(posedge dump) begin
    if (wr_lo <= wr_hi) $writememh(FILE_OUT, mem, wr_lo, wr_hi);
  end
endmodule
