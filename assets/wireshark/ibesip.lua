-- ibesip.lua: a Wireshark / tshark post-dissector for the IBE-SIP tunnel
-- (suite IBESIP-V01, spec ibe-sip-tunnel.md section 5).
--
-- Wireshark already dissects the tunnel body as CMS AuthEnvelopedData; this
-- script names our object identifiers and shows, for every tunneled SIP
-- message, the authenticated (clear) attributes: session id, direction and
-- sequence number, outer binding, and how the content key was transported.
-- Nothing here needs a key: these attributes are authenticated, not secret.
--
-- Use:  tshark -X lua_script:assets/wireshark/ibesip.lua -r capture.pcap \
--         -T fields -e ibesip.key_transport -e ibesip.session_id -e ibesip.seq
-- or copy it into Wireshark's personal plugins folder.

local ibesip = Proto("ibesip", "IBE-SIP tunnel (IBESIP-V01)")

local directions = { [0] = "callerToCallee", [1] = "calleeToCaller" }
local f_transport = ProtoField.string("ibesip.key_transport", "Key transport")
local f_session = ProtoField.bytes("ibesip.session_id", "Session id (ibesip-session-id)")
local f_direction = ProtoField.uint8("ibesip.direction", "Direction", base.DEC, directions)
local f_seq = ProtoField.uint64("ibesip.seq", "Sequence (ibesip-seq)")
local f_binding = ProtoField.bytes("ibesip.outer_binding", "Outer binding (ibesip-outer-binding)")
local f_ski = ProtoField.bytes("ibesip.recipient_ski", "Recipient key identifier (SHA-256(ID)[0..20])")
local f_kekid = ProtoField.bytes("ibesip.kek_id", "KEK identifier (session id)")
ibesip.fields = { f_transport, f_session, f_direction, f_seq, f_binding, f_ski, f_kekid }

local body_field = Field.new("sip.msg_body")

local function hex(s)
  return (s:gsub("..", function(h) return string.char(tonumber(h, 16)) end))
end

-- DER encodings of the OIDs (arc 2.25.107739270829777976896317625459894493603).
local ARC = "06166981a28dea8aedf282ac9daae0f7ddd5ad86c323"
local OID_BF = hex(ARC .. "0101")
local OID_SESSION_ID = hex(ARC .. "0201")
local OID_SEQ = hex(ARC .. "0202")
local OID_OUTER_BINDING = hex(ARC .. "0203")
local OID_AES256_WRAP = hex("060960864801650304012d")

-- Reads a DER length at position i (1-based); returns length and next index.
local function der_len(s, i)
  local b = s:byte(i)
  if b == nil then return nil end
  if b < 0x80 then return b, i + 1 end
  local n = b - 0x80
  if n < 1 or n > 3 then return nil end
  local len = 0
  for k = 1, n do
    local v = s:byte(i + k)
    if v == nil then return nil end
    len = len * 256 + v
  end
  return len, i + n + 1
end

-- After an attribute OID comes SET { value }: returns the value's tag,
-- its start index and its length.
local function attr_value(s, oid)
  local at = s:find(oid, 1, true)
  if not at then return nil end
  local i = at + #oid
  if s:byte(i) ~= 0x31 then return nil end
  local _, j = der_len(s, i + 1)
  if not j then return nil end
  local tag = s:byte(j)
  local len, k = der_len(s, j + 1)
  if not len then return nil end
  return tag, k, len
end

function ibesip.dissector(tvb, pinfo, tree)
  local fi = body_field()
  if fi == nil then return end
  local range = fi.range
  local s = range:bytes():raw()
  if not s:find(hex("060b2a864886f70d0109100117"), 1, true) then return end
  local off = range:offset()
  local sub = tree:add(ibesip, range)
  local function span(i, len) return tvb(off + i - 1, len) end

  if s:find(OID_BF, 1, true) then
    sub:add(f_transport, range, "IBE Boneh-Franklin (first message of a session)")
    -- rid [0] subjectKeyIdentifier: context tag 0x80, 20 bytes.
    local at = s:find(hex("8014"), 1, true)
    if at then sub:add(f_ski, span(at + 2, 20)) end
  elseif s:find(OID_AES256_WRAP, 1, true) then
    sub:add(f_transport, range, "AES-256 key wrap under the session KEK")
    -- kekri: kekid KEKIdentifier { keyIdentifier OCTET STRING (16) }.
    local at = s:find(hex("30120410"), 1, true)
    if at then sub:add(f_kekid, span(at + 4, 16)) end
  end

  local tag, i, len = attr_value(s, OID_SESSION_ID)
  if tag == 0x04 and len == 16 then sub:add(f_session, span(i, 16)) end

  tag, i, len = attr_value(s, OID_SEQ)
  if tag == 0x30 then
    -- SEQUENCE { ENUMERATED direction, INTEGER seq }
    if s:byte(i) == 0x0a and s:byte(i + 1) == 1 then
      sub:add(f_direction, span(i + 2, 1))
      local j = i + 3
      if s:byte(j) == 0x02 then
        local n = s:byte(j + 1)
        if n and n >= 1 and n <= 8 then
          local v = UInt64(0)
          for k = 1, n do v = v * 256 + s:byte(j + 1 + k) end
          sub:add(f_seq, span(j + 2, n), v)
        end
      end
    end
  end

  tag, i, len = attr_value(s, OID_OUTER_BINDING)
  if tag == 0x04 and len == 32 then sub:add(f_binding, span(i, 32)) end
end

register_postdissector(ibesip)
