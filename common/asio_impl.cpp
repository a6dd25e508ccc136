// The single translation unit that compiles Asio's and Beast's implementation
// (separate compilation), so the rest of the build only parses their declarations.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
