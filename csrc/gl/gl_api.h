// The subset of the OpenGL 4.3 core API the rasterizer uses, declared here so that building needs
// no GL headers and the module links no GL library: every entry point is looked up at run time
// through the platform layer (EGL / WGL), see platform.h.
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(_WIN32)
#define NVDR_GLAPI __stdcall
#else
#define NVDR_GLAPI
#endif

namespace nvdr_gl {

using GLenum = unsigned int;
using GLuint = unsigned int;
using GLint = int;
using GLsizei = int;
using GLboolean = unsigned char;
using GLbitfield = unsigned int;
using GLfloat = float;
using GLdouble = double;
using GLchar = char;
using GLubyte = unsigned char;
using GLintptr = std::ptrdiff_t;
using GLsizeiptr = std::ptrdiff_t;

// Values from the Khronos registry (glcorearb.h).
constexpr GLenum GL_NO_ERROR = 0;
constexpr GLenum GL_INVALID_ENUM = 0x0500;
constexpr GLenum GL_INVALID_VALUE = 0x0501;
constexpr GLenum GL_INVALID_OPERATION = 0x0502;
constexpr GLenum GL_OUT_OF_MEMORY = 0x0505;
constexpr GLenum GL_INVALID_FRAMEBUFFER_OPERATION = 0x0506;
constexpr GLenum GL_VENDOR = 0x1F00;
constexpr GLenum GL_RENDERER = 0x1F01;
constexpr GLenum GL_VERSION = 0x1F02;
constexpr GLenum GL_SHADING_LANGUAGE_VERSION = 0x8B8C;
constexpr GLenum GL_MAJOR_VERSION = 0x821B;
constexpr GLenum GL_MINOR_VERSION = 0x821C;
constexpr GLenum GL_VERTEX_SHADER = 0x8B31;
constexpr GLenum GL_GEOMETRY_SHADER = 0x8DD9;
constexpr GLenum GL_FRAGMENT_SHADER = 0x8B30;
constexpr GLenum GL_COMPILE_STATUS = 0x8B81;
constexpr GLenum GL_LINK_STATUS = 0x8B82;
constexpr GLenum GL_INFO_LOG_LENGTH = 0x8B84;
constexpr GLenum GL_ARRAY_BUFFER = 0x8892;
constexpr GLenum GL_SHADER_STORAGE_BUFFER = 0x90D2;
constexpr GLenum GL_DRAW_INDIRECT_BUFFER = 0x8F3F;
constexpr GLenum GL_PIXEL_PACK_BUFFER = 0x88EB;
constexpr GLenum GL_DYNAMIC_DRAW = 0x88E8;
constexpr GLenum GL_STREAM_READ = 0x88E1;
constexpr GLenum GL_INT = 0x1404;
constexpr GLenum GL_FLOAT = 0x1406;
constexpr GLenum GL_RGBA = 0x1908;
constexpr GLenum GL_RGBA32F = 0x8814;
constexpr GLenum GL_DEPTH_COMPONENT32F = 0x8CAC;
constexpr GLenum GL_TEXTURE_2D_ARRAY = 0x8C1A;
constexpr GLenum GL_TEXTURE_MIN_FILTER = 0x2801;
constexpr GLenum GL_TEXTURE_MAG_FILTER = 0x2800;
constexpr GLenum GL_NEAREST = 0x2600;
constexpr GLenum GL_FRAMEBUFFER = 0x8D40;
constexpr GLenum GL_READ_FRAMEBUFFER = 0x8CA8;
constexpr GLenum GL_DRAW_FRAMEBUFFER = 0x8CA9;
constexpr GLenum GL_COLOR_ATTACHMENT0 = 0x8CE0;
constexpr GLenum GL_COLOR_ATTACHMENT1 = 0x8CE1;
constexpr GLenum GL_DEPTH_ATTACHMENT = 0x8D00;
constexpr GLenum GL_FRAMEBUFFER_COMPLETE = 0x8CD5;
constexpr GLenum GL_DEPTH_TEST = 0x0B71;
constexpr GLenum GL_LESS = 0x0201;
constexpr GLenum GL_CULL_FACE = 0x0B44;
constexpr GLenum GL_DEPTH_CLAMP = 0x864F;
constexpr GLenum GL_BLEND = 0x0BE2;
constexpr GLenum GL_DITHER = 0x0BD0;
constexpr GLenum GL_SCISSOR_TEST = 0x0C11;
constexpr GLenum GL_MULTISAMPLE = 0x809D;
constexpr GLenum GL_FRAMEBUFFER_SRGB = 0x8DB9;
constexpr GLenum GL_RASTERIZER_DISCARD = 0x8C89;
constexpr GLenum GL_PRIMITIVE_RESTART = 0x8F9D;
constexpr GLenum GL_PRIMITIVE_RESTART_FIXED_INDEX = 0x8D69;
constexpr GLenum GL_POLYGON_OFFSET_FILL = 0x8037;
constexpr GLenum GL_COLOR = 0x1800;
constexpr GLenum GL_DEPTH = 0x1801;
constexpr GLenum GL_TRIANGLES = 0x0004;
constexpr GLenum GL_PACK_ROW_LENGTH = 0x0D02;
constexpr GLenum GL_PACK_SKIP_ROWS = 0x0D03;
constexpr GLenum GL_PACK_SKIP_PIXELS = 0x0D04;
constexpr GLenum GL_PACK_ALIGNMENT = 0x0D05;
constexpr GLenum GL_MAX_VIEWPORT_DIMS = 0x0D3A;
constexpr GLenum GL_MAX_TEXTURE_SIZE = 0x0D33;
constexpr GLenum GL_MAX_ARRAY_TEXTURE_LAYERS = 0x88FF;
constexpr GLenum GL_MAX_FRAMEBUFFER_WIDTH = 0x9315;
constexpr GLenum GL_MAX_FRAMEBUFFER_HEIGHT = 0x9316;
constexpr GLenum GL_MAX_FRAMEBUFFER_LAYERS = 0x9317;
constexpr GLenum GL_MAX_SHADER_STORAGE_BLOCK_SIZE = 0x90DE;
constexpr GLenum GL_SHADER_STORAGE_BUFFER_OFFSET_ALIGNMENT = 0x90DF;
constexpr GLenum GL_MAX_VERTEX_SHADER_STORAGE_BLOCKS = 0x90D6;
constexpr GLenum GL_MAX_FRAGMENT_SHADER_STORAGE_BLOCKS = 0x90DA;
constexpr GLenum GL_FALSE = 0;
constexpr GLenum GL_TRUE = 1;
constexpr GLbitfield GL_DEPTH_BUFFER_BIT = 0x00000100;
constexpr GLbitfield GL_COLOR_BUFFER_BIT = 0x00004000;

// X-macro list: return type, name, parameter list.
#define NVDR_GL_FUNCTIONS(X)                                                                          \
  X(GLenum, glGetError, (void))                                                                       \
  X(const GLubyte*, glGetString, (GLenum name))                                                       \
  X(void, glGetIntegerv, (GLenum pname, GLint * data))                                                \
  X(GLuint, glCreateShader, (GLenum type))                                                            \
  X(void, glShaderSource, (GLuint shader, GLsizei count, const GLchar* const* string, const GLint* length)) \
  X(void, glCompileShader, (GLuint shader))                                                           \
  X(void, glGetShaderiv, (GLuint shader, GLenum pname, GLint * params))                               \
  X(void, glGetShaderInfoLog, (GLuint shader, GLsizei bufSize, GLsizei * length, GLchar * infoLog))   \
  X(void, glDeleteShader, (GLuint shader))                                                            \
  X(GLuint, glCreateProgram, (void))                                                                  \
  X(void, glAttachShader, (GLuint program, GLuint shader))                                            \
  X(void, glLinkProgram, (GLuint program))                                                            \
  X(void, glGetProgramiv, (GLuint program, GLenum pname, GLint * params))                             \
  X(void, glGetProgramInfoLog, (GLuint program, GLsizei bufSize, GLsizei * length, GLchar * infoLog)) \
  X(void, glDeleteProgram, (GLuint program))                                                          \
  X(void, glUseProgram, (GLuint program))                                                             \
  X(GLint, glGetUniformLocation, (GLuint program, const GLchar* name))                                \
  X(void, glUniform1i, (GLint location, GLint v0))                                                    \
  X(void, glUniform2i, (GLint location, GLint v0, GLint v1))                                          \
  X(void, glUniform2f, (GLint location, GLfloat v0, GLfloat v1))                                      \
  X(void, glUniform4f, (GLint location, GLfloat v0, GLfloat v1, GLfloat v2, GLfloat v3))              \
  X(void, glGenBuffers, (GLsizei n, GLuint * buffers))                                                \
  X(void, glDeleteBuffers, (GLsizei n, const GLuint* buffers))                                        \
  X(void, glBindBuffer, (GLenum target, GLuint buffer))                                               \
  X(void, glBufferData, (GLenum target, GLsizeiptr size, const void* data, GLenum usage))             \
  X(void, glBufferSubData, (GLenum target, GLintptr offset, GLsizeiptr size, const void* data))       \
  X(void, glBindBufferBase, (GLenum target, GLuint index, GLuint buffer))                             \
  X(void, glBindBufferRange, (GLenum target, GLuint index, GLuint buffer, GLintptr offset, GLsizeiptr size)) \
  X(void, glGenVertexArrays, (GLsizei n, GLuint * arrays))                                            \
  X(void, glDeleteVertexArrays, (GLsizei n, const GLuint* arrays))                                    \
  X(void, glBindVertexArray, (GLuint array))                                                          \
  X(void, glEnableVertexAttribArray, (GLuint index))                                                  \
  X(void, glVertexAttribIPointer, (GLuint index, GLint size, GLenum type, GLsizei stride, const void* pointer)) \
  X(void, glVertexAttribDivisor, (GLuint index, GLuint divisor))                                      \
  X(void, glGenTextures, (GLsizei n, GLuint * textures))                                              \
  X(void, glDeleteTextures, (GLsizei n, const GLuint* textures))                                      \
  X(void, glBindTexture, (GLenum target, GLuint texture))                                             \
  X(void, glTexStorage3D, (GLenum target, GLsizei levels, GLenum internalformat, GLsizei width, GLsizei height, GLsizei depth)) \
  X(void, glTexParameteri, (GLenum target, GLenum pname, GLint param))                                \
  X(void, glGenFramebuffers, (GLsizei n, GLuint * framebuffers))                                      \
  X(void, glDeleteFramebuffers, (GLsizei n, const GLuint* framebuffers))                              \
  X(void, glBindFramebuffer, (GLenum target, GLuint framebuffer))                                     \
  X(void, glFramebufferTexture, (GLenum target, GLenum attachment, GLuint texture, GLint level))      \
  X(void, glFramebufferTextureLayer, (GLenum target, GLenum attachment, GLuint texture, GLint level, GLint layer)) \
  X(GLenum, glCheckFramebufferStatus, (GLenum target))                                                \
  X(void, glDrawBuffers, (GLsizei n, const GLenum* bufs))                                             \
  X(void, glReadBuffer, (GLenum src))                                                                 \
  X(void, glViewport, (GLint x, GLint y, GLsizei width, GLsizei height))                              \
  X(void, glClearBufferfv, (GLenum buffer, GLint drawbuffer, const GLfloat* value))                   \
  X(void, glEnable, (GLenum cap))                                                                     \
  X(void, glDisable, (GLenum cap))                                                                    \
  X(void, glDepthFunc, (GLenum func))                                                                 \
  X(void, glDepthMask, (GLboolean flag))                                                              \
  X(void, glColorMaski, (GLuint index, GLboolean r, GLboolean g, GLboolean b, GLboolean a))           \
  X(void, glDrawArraysInstancedBaseInstance, (GLenum mode, GLint first, GLsizei count, GLsizei instancecount, GLuint baseinstance)) \
  X(void, glMultiDrawArraysIndirect, (GLenum mode, const void* indirect, GLsizei drawcount, GLsizei stride)) \
  X(void, glPixelStorei, (GLenum pname, GLint param))                                                 \
  X(void, glReadPixels, (GLint x, GLint y, GLsizei width, GLsizei height, GLenum format, GLenum type, void* pixels)) \
  X(void, glFinish, (void))                                                                           \
  X(void, glFlush, (void))

struct GLFunctions {
#define NVDR_GL_MEMBER(ret, name, args) ret(NVDR_GLAPI* name) args = nullptr;
  NVDR_GL_FUNCTIONS(NVDR_GL_MEMBER)
#undef NVDR_GL_MEMBER
};

}  // namespace nvdr_gl
