/* The project's own compatibility shim, force-included (`-include`) when compiling mlx-c.
 *
 * mlx-c 0.7.0 calls `std::format("... {} ...", args...)` (in mlx/c/private/io.h). libstdc++ 12
 * (gcc 12, Debian 12) has no <format>; it arrived with gcc 13. Where the standard library already
 * provides `std::format` this header does nothing. Otherwise it defines a minimal `std::format`
 * that substitutes each `{}` with the next argument, streamed through an ostringstream. That is
 * all mlx-c uses: plain `{}` placeholders, no format specs.
 */
#pragma once
#ifdef __cplusplus
#include <version>
#if !defined(__cpp_lib_format)
#include <sstream>
#include <string>
#include <string_view>

namespace std {
namespace mlx_compat_detail {
inline void format_rest(ostringstream& out, string_view fmt) { out << fmt; }

template <typename T, typename... Rest>
void format_rest(ostringstream& out, string_view fmt, const T& first, const Rest&... rest) {
  const size_t pos = fmt.find("{}");
  if (pos == string_view::npos) {
    out << fmt;
    return;
  }
  out << fmt.substr(0, pos) << first;
  format_rest(out, fmt.substr(pos + 2), rest...);
}
} // namespace mlx_compat_detail

template <typename... Args>
string format(string_view fmt, const Args&... args) {
  ostringstream out;
  mlx_compat_detail::format_rest(out, fmt, args...);
  return out.str();
}
} // namespace std
#endif
#endif
