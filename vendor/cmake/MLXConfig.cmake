# The project's own stand-in for MLX's installed MLXConfig.cmake, used when building mlx-c.
#
# It describes a prebuilt MLX (headers plus the shared libmlx) by its install prefix, which the
# build script passes as MLX_PREFIX. MLX's own config file also looks for MLX's build dependencies:
# the CUDA wheel's asks for the CUDA toolkit and cuDNN headers, which mlx-c does not need (it only
# compiles against MLX's C++ headers). This file asks for nothing but the headers and the library.
if(NOT DEFINED MLX_PREFIX)
  message(FATAL_ERROR "MLX_PREFIX must name a prebuilt MLX prefix (lib/, include/)")
endif()

find_library(MLX_LIBRARY NAMES mlx PATHS "${MLX_PREFIX}/lib" NO_DEFAULT_PATH REQUIRED)
set(MLX_INCLUDE_DIRS "${MLX_PREFIX}/include")
set(MLX_LIBRARY_DIRS "${MLX_PREFIX}/lib")
set(MLX_LIBRARIES mlx)
set(MLX_CXX_FLAGS "")

if(NOT TARGET mlx)
  add_library(mlx SHARED IMPORTED)
  set_target_properties(mlx PROPERTIES
    IMPORTED_LOCATION "${MLX_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MLX_INCLUDE_DIRS}")
endif()
set(MLX_FOUND TRUE)
