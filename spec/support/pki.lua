-- A throwaway certificate authority for the TLS specs, made with the
-- openssl command in the spec's temp dir:
--
--   local pki = require "spec.support.pki"
--   local ca = pki.ca("test")                  -- ca.crt, ca.key
--   local crt, key = ca:issue("srv", { "localhost", "127.0.0.1" })
--   ca:issue("old", { "localhost" }, { expired = true })
--   ca:issue("client", { "gateway" }, { client = true })
--
-- Names that look like IPv4 addresses go in the subjectAltName as IP
-- entries, the others as DNS names; the first is also the CN.
local h = require "spec.support.helpers"

local _M = {}
local CA = {}
CA.__index = CA

local function run(cmd)
    local out = h.sh(cmd .. " 2>&1; echo rc=$?")
    assert(out:find("rc=0\n", 1, true), cmd .. "\n" .. out)
end

local function write(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
end

function _M.ca(tag)
    local dir = h.tmpdir() .. "/pki-" .. tag
    run("mkdir -p " .. h.shq(dir))
    local self = setmetatable({ dir = dir, crt = dir .. "/ca.crt", key = dir .. "/ca.key",
                                serial = 0 }, CA)
    run(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes " ..
         "-days 3 -subj %s -addext basicConstraints=critical,CA:TRUE " ..
         "-addext keyUsage=critical,keyCertSign,cRLSign -keyout %s -out %s"):format(
        h.shq("/CN=moongate spec CA " .. tag), h.shq(self.key), h.shq(self.crt)))
    write(dir .. "/index.txt", "")
    write(dir .. "/ca.cnf", ([[
[ ca ]
default_ca = spec
[ spec ]
database = %s/index.txt
new_certs_dir = %s
serial = %s/serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[ any ]
commonName = supplied
]]):format(dir, dir, dir))
    return self
end

-- Issues a certificate for `names`; opts.expired: valid only in 2020;
-- opts.client: for TLS clients (extendedKeyUsage clientAuth). Returns the
-- certificate and key paths.
function CA:issue(tag, names, opts)
    opts = opts or {}
    self.serial = self.serial + 1
    write(self.dir .. "/serial", ("%04X\n"):format(self.serial + 4096))
    local crt, key = self.dir .. "/" .. tag .. ".crt", self.dir .. "/" .. tag .. ".key"
    local csr = self.dir .. "/" .. tag .. ".csr"
    local san = {}
    for i, n in ipairs(names) do
        san[i] = (n:match("^[%d.]+$") and "IP:" or "DNS:") .. n
    end
    run(("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes " ..
         "-subj %s -addext %s -addext basicConstraints=CA:FALSE -addext %s " ..
         "-keyout %s -out %s"):format(
        h.shq("/CN=" .. names[1]), h.shq("subjectAltName=" .. table.concat(san, ",")),
        h.shq("extendedKeyUsage=" .. (opts.client and "clientAuth" or "serverAuth")),
        h.shq(key), h.shq(csr)))
    local dates = opts.expired and "-startdate 20200101000000Z -enddate 20200102000000Z"
        or "-days 2"
    run(("openssl ca -batch -notext -config %s -cert %s -keyfile %s -in %s -out %s %s"):format(
        h.shq(self.dir .. "/ca.cnf"), h.shq(self.crt), h.shq(self.key), h.shq(csr),
        h.shq(crt), dates))
    return crt, key
end

return _M
