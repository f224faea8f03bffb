-- spec/c/dns_spec.lua: the DNS stub resolver (src/dns.c) through the FFI:
-- queries as bytes, answers built byte by byte here (compression, CNAME
-- chains, SRV with its additional section, NXDOMAIN with an SOA, loops and
-- garbage), and the client on a real libuv loop against a real UDP server
-- (spec/support/dns_server.py) that sends spoofed answers first, drops a
-- query, or never answers.
local ffi = require "ffi"
local bit = require "bit"

local decl = require("spec.support.cdecl").new()
local cdef = decl.cdef

-- libuv, linked into the test library (not dns.h's: declared apart)
pcall(ffi.cdef, [[
typedef struct uv_loop_s uv_loop_t;
size_t uv_loop_size(void);
int uv_loop_init(uv_loop_t *loop);
int uv_run(uv_loop_t *loop, int mode);
int uv_loop_close(uv_loop_t *loop);
]])

-- mirrors src/dns.h (struct sockaddr_storage: 128 bytes, 8-aligned)
cdef "struct sockaddr_storage { uint64_t words_[16]; };"
cdef [[
typedef struct mg_dns_rr_s {
    uint16_t type;
    uint32_t ttl;
    uint8_t addr[16];
    uint16_t priority, weight, port;
    char target[256];
} mg_dns_rr_t;
typedef struct mg_dns_extra_s {
    char name[256];
    uint16_t type;
    uint32_t ttl;
    uint8_t addr[16];
} mg_dns_extra_t;
typedef struct mg_dns_answer_s {
    int status;
    int truncated;
    uint32_t ttl;
    size_t n;
    mg_dns_rr_t rr[64];
    size_t nextra;
    mg_dns_extra_t extra[64];
} mg_dns_answer_t;
typedef struct mg_dns_conf_s {
    struct sockaddr_storage server;
    uint64_t timeout;
    int attempts;
} mg_dns_conf_t;
typedef struct mg_dns_query_s mg_dns_query_t;
typedef void (*mg_dns_cb)(void *arg, const mg_dns_answer_t *a);
]]
cdef [[
int mg_dns_query_build(uint8_t *buf, size_t cap, uint16_t id, const char *name, uint16_t qtype);
int mg_dns_parse(const uint8_t *msg, size_t len, uint16_t id, const char *name, uint16_t qtype,
                 mg_dns_answer_t *out);
const char *mg_dns_status_name(int status);
int mg_dns_query(uv_loop_t *loop, const mg_dns_conf_t *conf, const char *name, uint16_t qtype,
                 mg_dns_cb cb, void *arg, mg_dns_query_t **q);
void mg_dns_cancel(mg_dns_query_t *q);
int mg_dns_server_parse(const char *s, struct sockaddr_storage *out);
int mg_dns_system_server(const char *path, struct sockaddr_storage *out);
size_t mg_dns_hosts_lookup(const char *path, const char *name, uint16_t port,
                           struct sockaddr_storage *out, size_t max);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")
local A, CNAME, AAAA, SRV, SOA, OPT = 1, 5, 28, 33, 6, 41
local OK, NXDOMAIN, SERVFAIL, REFUSED, TIMEOUT = 0, -1, -2, -3, -5
local EFORMAT, ENAME, EMISMATCH = -6, -8, -9

local function u16(v) return string.char(bit.rshift(v, 8), bit.band(v, 255)) end
local function u32(v) return u16(bit.rshift(v, 16)) .. u16(bit.band(v, 0xffff)) end

local function wire(name)
    local out = {}
    for label in name:gmatch("[^.]+") do out[#out + 1] = string.char(#label) .. label end
    return table.concat(out) .. "\0"
end

local function header(id, flags, qd, an, ns, ar)
    return u16(id) .. u16(flags) .. u16(qd) .. u16(an) .. u16(ns) .. u16(ar)
end

local function question(name, qtype) return wire(name) .. u16(qtype) .. u16(1) end

local function rr(owner, rtype, ttl, rdata)
    return owner .. u16(rtype) .. u16(1) .. u32(ttl) .. u16(#rdata) .. rdata
end

local TO_QUESTION = "\192\12" -- a pointer to the question's name
local function ptr(off) return string.char(0xc0 + bit.rshift(off, 8), bit.band(off, 255)) end

local ans = ffi.new("mg_dns_answer_t")

local function parse(msg, id, name, qtype)
    local buf = ffi.new("uint8_t[?]", #msg + 1)
    ffi.copy(buf, msg, #msg)
    return lib.mg_dns_parse(buf, #msg, id, name, qtype, ans)
end

local function ip4(a) return string.format("%d.%d.%d.%d", a[0], a[1], a[2], a[3]) end

local function records()
    local out = {}
    for i = 0, tonumber(ans.n) - 1 do
        local r = ans.rr[i]
        if r.type == A then
            out[#out + 1] = { ip4(r.addr), r.ttl }
        elseif r.type == AAAA then
            out[#out + 1] = { r.addr[15], r.ttl }
        else
            out[#out + 1] = { r.priority, r.weight, r.port, ffi.string(r.target), r.ttl }
        end
    end
    return out
end

describe("dns: queries", function()
    it("are a header with RD and one question, then EDNS's OPT", function()
        local buf = ffi.new("uint8_t[300]")
        local n = lib.mg_dns_query_build(buf, 300, 0xbeef, "api.Example.", A)
        local q = ffi.string(buf, n)
        assert.equal(header(0xbeef, 0x0100, 1, 0, 0, 1) .. question("api.Example", A) ..
                     "\0" .. u16(OPT) .. u16(1232) .. u32(0) .. u16(0), q)
    end)

    it("refuse names that cannot be written", function()
        local buf = ffi.new("uint8_t[300]")
        for _, bad in ipairs { "", ".", "a..b", string.rep("x", 64) .. ".example",
                               "sp ace.example", "a\\.b", string.rep("abcdefgh.", 32) } do
            assert.equal(ENAME, lib.mg_dns_query_build(buf, 300, 1, bad, A), bad)
        end
        assert.is_true(lib.mg_dns_query_build(buf, 300, 1, "_http._tcp.svc-1.example", SRV) > 0)
    end)
end)

describe("dns: answers", function()
    it("give every A record with its TTL, names compressed", function()
        local m = header(0x4242, 0x8180, 1, 2, 0, 0) .. question("a.example", A) ..
            rr(TO_QUESTION, A, 30, "\10\0\0\1") .. rr(TO_QUESTION, A, 5, "\10\0\0\2")
        assert.equal(0, parse(m, 0x4242, "A.EXAMPLE", A))
        assert.equal(OK, ans.status)
        assert.same({ { "10.0.0.1", 30 }, { "10.0.0.2", 5 } }, records())
    end)

    it("follow a CNAME chain in any order, with the least TTL on the way", function()
        local q = header(7, 0x8180, 1, 3, 0, 0) .. question("a.example", A)
        -- the address first, then c -> b, then a -> c: names by pointer
        local at_b = #q -- b.example: the first record's owner
        local m = q .. rr(wire("b.example"), A, 300, "\192\0\2\7")
        local at_c = #m
        m = m .. rr(wire("c.example"), CNAME, 40, ptr(at_b))
        m = m .. rr(TO_QUESTION, CNAME, 100, ptr(at_c))
        assert.equal(0, parse(m, 7, "a.example", A))
        assert.same({ { "192.0.2.7", 40 } }, records())
    end)

    it("refuse a CNAME loop and a pointer that goes forward", function()
        local q = header(8, 0x8180, 1, 2, 0, 0) .. question("a.example", A)
        local at_b = #q
        local m = q .. rr(wire("b.example"), CNAME, 1, TO_QUESTION) ..
            rr(TO_QUESTION, CNAME, 1, ptr(at_b))
        assert.equal(0, parse(m, 8, "a.example", A))
        assert.equal(EFORMAT, ans.status)
        local f = header(9, 0x8180, 1, 1, 0, 0) .. question("a.example", A)
        f = f .. ptr(#f) .. u16(A) .. u16(1) .. u32(1) .. u16(4) .. "\1\2\3\4"
        assert.equal(0, parse(f, 9, "a.example", A))
        assert.equal(EFORMAT, ans.status)
        assert.equal(0, tonumber(ans.n))
    end)

    it("are another message for another id or question, or for a query", function()
        local m = header(5, 0x8180, 1, 1, 0, 0) .. question("a.example", A) ..
            rr(TO_QUESTION, A, 1, "\1\1\1\1")
        assert.equal(EMISMATCH, parse(m, 6, "a.example", A))
        assert.equal(EMISMATCH, parse(m, 5, "b.example", A))
        assert.equal(EMISMATCH, parse(m, 5, "a.example", AAAA))
        local query = header(5, 0x0100, 1, 0, 0, 0) .. question("a.example", A)
        assert.equal(EMISMATCH, parse(query, 5, "a.example", A))
        assert.equal(EMISMATCH, parse(m:sub(1, 11), 5, "a.example", A))
    end)

    it("say NXDOMAIN with the SOA's negative TTL, SERVFAIL, REFUSED", function()
        local soa = wire("ns.example") .. wire("host.example") .. u32(1) .. u32(2) .. u32(3) ..
            u32(4) .. u32(60)
        local m = header(3, 0x8183, 1, 0, 1, 0) .. question("a.example", A) ..
            rr(wire("example"), SOA, 300, soa)
        assert.equal(0, parse(m, 3, "a.example", A))
        assert.equal(NXDOMAIN, ans.status)
        assert.equal(60, ans.ttl)
        assert.equal(0, parse(header(3, 0x8182, 1, 0, 0, 0) .. question("a.example", A), 3,
                              "a.example", A))
        assert.equal(SERVFAIL, ans.status)
        assert.equal(0, parse(header(3, 0x8185, 1, 0, 0, 0) .. question("a.example", A), 3,
                              "a.example", A))
        assert.equal(REFUSED, ans.status)
        assert.equal("servfail", ffi.string(lib.mg_dns_status_name(SERVFAIL)))
    end)

    it("keep the records of a truncated answer, and say it was", function()
        local m = header(4, 0x8380, 1, 1, 0, 0) .. question("a.example", A) ..
            rr(TO_QUESTION, A, 9, "\10\1\1\1")
        assert.equal(0, parse(m, 4, "a.example", A))
        assert.equal(1, ans.truncated)
        assert.same({ { "10.1.1.1", 9 } }, records())
    end)

    it("give SRV records with their targets' addresses from the additional section", function()
        local q = header(12, 0x8180, 1, 3, 0, 2) .. question("_http._tcp.a.example", SRV)
        local m = q .. rr(TO_QUESTION, SRV, 30, u16(10) .. u16(5) .. u16(8080) ..
                                                   wire("api.example"))
        local at_api = #q + 12 + 6
        m = m .. rr(TO_QUESTION, SRV, 20, u16(20) .. u16(0) .. u16(8081) .. wire("b.example"))
        m = m .. rr(TO_QUESTION, SRV, 20, u16(30) .. u16(0) .. u16(0) .. "\0") -- "." : none
        m = m .. rr(ptr(at_api), A, 30, "\127\0\0\2") .. rr(ptr(at_api), AAAA, 30,
                                                            string.rep("\0", 15) .. "\1")
        assert.equal(0, parse(m, 12, "_http._tcp.a.example", SRV))
        assert.same({ { 10, 5, 8080, "api.example", 30 }, { 20, 0, 8081, "b.example", 20 } },
                    records())
        assert.equal(2, tonumber(ans.nextra))
        assert.equal("api.example", ffi.string(ans.extra[0].name))
        assert.equal("127.0.0.2", ip4(ans.extra[0].addr))
        assert.equal(AAAA, ans.extra[1].type)
    end)

    it("refuse records whose data does not fit their type or the message", function()
        local m = header(2, 0x8180, 1, 1, 0, 0) .. question("a.example", A) ..
            rr(TO_QUESTION, A, 1, "\1\2\3")
        assert.equal(0, parse(m, 2, "a.example", A))
        assert.equal(EFORMAT, ans.status)
        local cut = header(2, 0x8180, 1, 1, 0, 0) .. question("a.example", A) ..
            TO_QUESTION .. u16(A) .. u16(1) .. u32(1) .. u16(40) .. "\1\2\3\4"
        assert.equal(0, parse(cut, 2, "a.example", A))
        assert.equal(EFORMAT, ans.status)
        -- a good record, then a bad one: nothing of the answer is kept
        -- (found by the fuzz target: corpus/dns/srv-bad-second-record)
        local srv = header(2, 0x8180, 1, 2, 0, 0) .. question("_http._tcp.a.example", SRV) ..
            rr(TO_QUESTION, SRV, 1, u16(1) .. u16(1) .. u16(80) .. wire("api.example")) ..
            rr(TO_QUESTION, SRV, 1, u16(1) .. u16(1) .. u16(80) .. "\5short")
        assert.equal(0, parse(srv, 2, "_http._tcp.a.example", SRV))
        assert.equal(EFORMAT, ans.status)
        assert.equal(0, tonumber(ans.n))
    end)

    it("keep at most 64 records", function()
        local n = 100
        local parts = { header(1, 0x8180, 1, n, 0, 0), question("a.example", A) }
        for i = 1, n do parts[#parts + 1] = rr(TO_QUESTION, A, 1, "\10\0\0" .. string.char(i)) end
        assert.equal(0, parse(table.concat(parts), 1, "a.example", A))
        assert.equal(64, tonumber(ans.n))
    end)
end)

describe("dns: servers and the hosts file", function()
    local ss = ffi.new("struct sockaddr_storage")
    local function where()
        local b = ffi.cast("uint8_t *", ss)
        local port = b[2] * 256 + b[3]
        if b[0] == 2 then return string.format("%d.%d.%d.%d:%d", b[4], b[5], b[6], b[7], port) end
        return "v6:" .. port
    end

    it("read ADDR, ADDR:PORT, [v6]:PORT and a bare IPv6 address", function()
        assert.equal(0, lib.mg_dns_server_parse("127.0.0.1", ss))
        assert.equal("127.0.0.1:53", where())
        assert.equal(0, lib.mg_dns_server_parse("127.0.0.1:5353", ss))
        assert.equal("127.0.0.1:5353", where())
        assert.equal(0, lib.mg_dns_server_parse("[::1]:5300", ss))
        assert.equal("v6:5300", where())
        assert.equal(0, lib.mg_dns_server_parse("::1", ss))
        assert.equal("v6:53", where())
        for _, bad in ipairs { "", "localhost", "1.2.3.4:0", "1.2.3.4:70000", "[::1]x", "1.2.3:53",
                               "010.0.0.1" } do
            assert.equal(-1, lib.mg_dns_server_parse(bad, ss), bad)
        end
    end)

    local function file_of(text)
        local path = os.tmpname()
        local f = assert(io.open(path, "w"))
        f:write(text)
        f:close()
        return path
    end

    it("take resolv.conf's first usable nameserver", function()
        local path = file_of("# comment\nsearch example\nnameserver fe80::1%eth0\n" ..
                             "nameserver 10.9.8.7\nnameserver 10.9.8.8\n")
        assert.equal(0, lib.mg_dns_system_server(path, ss))
        assert.equal("10.9.8.7:53", where())
        os.remove(path)
        assert.equal(-1, lib.mg_dns_system_server("/nonexistent/resolv.conf", ss))
    end)

    it("look names up in a hosts file, every address in order, case-insensitive", function()
        local path = file_of("127.0.0.1 localhost\n# 10.0.0.9 svc\n10.0.0.1 other svc.local " ..
                             "# note\n::1 svc.local\n10.0.0.2\tSVC.local\n")
        local out = ffi.new("struct sockaddr_storage[4]")
        assert.equal(3, tonumber(lib.mg_dns_hosts_lookup(path, "svc.LOCAL", 8080, out, 4)))
        ffi.copy(ss, out[0], ffi.sizeof(ss))
        assert.equal("10.0.0.1:8080", where())
        ffi.copy(ss, out[1], ffi.sizeof(ss))
        assert.equal("v6:8080", where())
        ffi.copy(ss, out[2], ffi.sizeof(ss))
        assert.equal("10.0.0.2:8080", where())
        assert.equal(1, tonumber(lib.mg_dns_hosts_lookup(path, "svc.local", 1, out, 1)))
        assert.equal(0, tonumber(lib.mg_dns_hosts_lookup(path, "svc", 1, out, 4)))
        os.remove(path)
    end)
end)

describe("dns: the client on a real socket", function()
    setup(function()
        jit.off() -- the callback runs from C, inside uv_run
    end)

    -- Runs one query against a server started with `mode`; returns the
    -- callback's status, its addresses and the queries the server saw.
    local function ask(mode, timeout_ms, attempts)
        local out = os.tmpname()
        local cmd = "/usr/bin/python3 spec/support/dns_server.py --mode " .. mode ..
            " --addr 192.0.2.10 --addr 192.0.2.11 >" .. out .. " 2>" .. out .. ".log & echo $!"
        local p = assert(io.popen(cmd))
        local pid = assert(tonumber(p:read("*l")))
        p:close()
        local port
        for _ = 1, 200 do
            local f = io.open(out)
            local l = f and f:read("*l")
            if f then f:close() end
            port = l and l:match("^ready (%d+)")
            if port then break end
            os.execute("sleep 0.05")
        end
        assert(port, "the DNS server did not start")
        local mem = ffi.new("uint8_t[?]", lib.uv_loop_size())
        local lp = ffi.cast("uv_loop_t *", mem)
        assert.equal(0, lib.uv_loop_init(lp))
        local conf = ffi.new("mg_dns_conf_t")
        assert.equal(0, lib.mg_dns_server_parse("127.0.0.1:" .. port, conf.server))
        conf.timeout, conf.attempts = timeout_ms, attempts
        local got
        local cb = ffi.cast("mg_dns_cb", function(_, a)
            local addrs = {}
            for i = 0, tonumber(a.n) - 1 do addrs[#addrs + 1] = ip4(a.rr[i].addr) end
            got = { status = a.status, addrs = addrs }
        end)
        assert.equal(0, lib.mg_dns_query(lp, conf, "svc.example", A, cb, nil, nil))
        lib.uv_run(lp, 0)
        assert.equal(0, lib.uv_loop_close(lp))
        cb:free()
        os.execute("kill " .. pid)
        local f = io.open(out .. ".log")
        local log = f and f:read("*a") or ""
        if f then f:close() end
        os.remove(out)
        os.remove(out .. ".log")
        local ids = {}
        for id in log:gmatch("query (%d+)") do ids[#ids + 1] = tonumber(id) end
        return got, ids
    end

    it("takes the answer to its own query and ignores spoofed ones", function()
        local got, ids = ask("spoof", 2000, 1)
        assert.same({ status = OK, addrs = { "192.0.2.10", "192.0.2.11" } }, got)
        assert.equal(1, #ids)
    end)

    it("tries again with a new id when a try gets no answer", function()
        local got, ids = ask("drop-first", 200, 3)
        assert.same({ status = OK, addrs = { "192.0.2.10", "192.0.2.11" } }, got)
        assert.equal(2, #ids)
        assert.are_not.equal(ids[1], ids[2])
    end)

    it("times out after its tries, and says SERVFAIL when told", function()
        local got, ids = ask("silent", 100, 2)
        assert.same({ status = TIMEOUT, addrs = {} }, got)
        assert.equal(2, #ids)
        got = ask("servfail", 1000, 3)
        assert.same({ status = SERVFAIL, addrs = {} }, got)
    end)

    it("declares the prototypes of src/dns.h", function()
        assert.same({}, decl.missing { "src/dns.h" })
    end)
end)
