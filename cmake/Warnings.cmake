# Warnings are errors for C++ and CUDA alike. -lineinfo lets Nsight Compute map kernels to source.
function(pneumo_set_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Werror>
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -lineinfo --expt-relaxed-constexpr
      -Xcompiler=-Wall,-Wextra,-Werror>)
endfunction()
