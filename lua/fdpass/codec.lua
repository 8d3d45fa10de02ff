--- The value codec the upgrade handshake speaks: nil, booleans, numbers,
-- strings and tables of them, with limits on depth and size.
-- @module fdpass.codec
local core = require "fdpass.core"

local M = {}

--- A binary encoding of nil, booleans, numbers, strings and tables of them.
-- @function encode
-- @param value
-- @treturn string
M.encode = core.encode

--- The value `encode` made of `s`. Checks every byte (it reads what another
-- process sent): `nil, msg, "EPROTO"` on anything else. Memory grows with
-- what has arrived, never with what a header announces.
-- @function decode
-- @string s
-- @return value
M.decode = core.decode

return M
