--- The value codec the upgrade handshake speaks: nil, booleans, numbers,
-- strings and tables of them, with limits on depth and size.
-- @module fdpass.codec
local core = require "fdpass.core"

return { encode = core.encode, decode = core.decode }
